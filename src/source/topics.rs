//! Topic identity: each Kafka topic has an ID (a UUID, metadata v10+) that changes when the
//! topic is deleted and created again under the same name. freshet compares it with the ID
//! its applied offsets came from to tell a recreated topic from one that merely moved on;
//! watermarks alone cannot (a new log can end anywhere).
//!
//! rdkafka does not wrap librdkafka's DescribeTopics admin call, so it is called through the
//! raw bindings here, on any client handle (admin calls work on consumers too).

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka_sys as rdsys;

/// What the cluster says about one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicState {
    /// The topic exists.
    Present {
        /// Its ID (base64, as Kafka's tools print it); `None` when the broker reports none.
        id: Option<String>,
        /// Its partition count.
        partitions: i32,
    },
    /// No topic of that name exists (deleted, or not created yet).
    Missing,
    /// The broker answered with another error for this topic (e.g. not authorised).
    Failed(String),
}

/// Errors of a whole describe call.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The request could not be made or was not answered in time.
    #[error("describing topics failed: {0}")]
    Request(String),
}

/// Describes `names` (ID and partition count each), waiting at most `timeout`. Blocking: call
/// it from a thread that may block.
pub fn describe_topics<C: ClientContext>(
    client: &Client<C>,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<(String, TopicState)>, DescribeError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let c_names: Vec<CString> = names
        .iter()
        .map(|n| CString::new(n.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| DescribeError::Request("a topic name contains a NUL byte".into()))?;
    let mut name_ptrs: Vec<*const c_char> = c_names.iter().map(|c| c.as_ptr()).collect();
    let timeout_ms = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    let rk = client.native_ptr();

    // SAFETY: every handle created here is destroyed by its guard below, on every path; the
    // name strings outlive the collection built from them (librdkafka copies them anyway);
    // the result's topic descriptions are owned by the event and read before it is destroyed.
    unsafe {
        let queue = Guard(rdsys::rd_kafka_queue_new(rk), rdsys::rd_kafka_queue_destroy);
        let collection = Guard(
            rdsys::rd_kafka_TopicCollection_of_topic_names(name_ptrs.as_mut_ptr(), names.len()),
            rdsys::rd_kafka_TopicCollection_destroy,
        );
        let options = Guard(
            rdsys::rd_kafka_AdminOptions_new(
                rk,
                rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            ),
            rdsys::rd_kafka_AdminOptions_destroy,
        );
        if queue.0.is_null() || collection.0.is_null() || options.0.is_null() {
            return Err(DescribeError::Request(
                "librdkafka refused the request".into(),
            ));
        }
        let mut errstr = [0 as c_char; 256];
        rdsys::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rdsys::rd_kafka_DescribeTopics(rk, collection.0, options.0, queue.0);
        // A little longer than the request's own timeout, which then answers with an error.
        let event = Guard(
            rdsys::rd_kafka_queue_poll(queue.0, timeout_ms.saturating_add(1000)),
            rdsys::rd_kafka_event_destroy,
        );
        if event.0.is_null() {
            return Err(DescribeError::Request(format!(
                "no answer within {} ms",
                timeout_ms
            )));
        }
        let err = rdsys::rd_kafka_event_error(event.0);
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(DescribeError::Request(c_str(
                rdsys::rd_kafka_event_error_string(event.0),
            )));
        }
        let result = rdsys::rd_kafka_event_DescribeTopics_result(event.0);
        if result.is_null() {
            return Err(DescribeError::Request("unexpected answer".into()));
        }
        let mut count = 0usize;
        let topics = rdsys::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let desc = *topics.add(i);
            let name = c_str(rdsys::rd_kafka_TopicDescription_name(desc));
            let error = rdsys::rd_kafka_TopicDescription_error(desc);
            let state = if !error.is_null()
                && rdsys::rd_kafka_error_code(error)
                    != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                let code: RDKafkaErrorCode = rdsys::rd_kafka_error_code(error).into();
                match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        TopicState::Missing
                    }
                    _ => TopicState::Failed(c_str(rdsys::rd_kafka_error_string(error))),
                }
            } else {
                let mut partitions = 0usize;
                rdsys::rd_kafka_TopicDescription_partitions(desc, &mut partitions);
                let id = rdsys::rd_kafka_TopicDescription_topic_id(desc);
                TopicState::Present {
                    id: (!id.is_null())
                        .then(|| c_str(rdsys::rd_kafka_Uuid_base64str(id)))
                        .filter(|id| !id.is_empty()),
                    partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
                }
            };
            out.push((name, state));
        }
        Ok(out)
    }
}

/// Destroys a librdkafka handle when dropped (null is left alone).
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor and is
            // destroyed exactly once, here.
            unsafe { (self.1)(self.0) }
        }
    }
}

/// Copies a C string owned by librdkafka (null becomes empty).
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the call.
unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
