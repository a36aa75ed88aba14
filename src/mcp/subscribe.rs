//! Subscriptions: a client is told when a document or a collection's change feed changes.
//!
//! Two resources can be watched: `freshet://{collection}/{id}` (one document) and
//! `freshet://{collection}/changes` (every change of the collection; with
//! `?filter=<percent-encoded JSON>` only those whose version passes the filter, as in
//! `search`). A document whose id is literally `changes` is `freshet://{collection}/%63hanges`.
//!
//! - 2025-11-25 sessions use `resources/subscribe` / `resources/unsubscribe`; the session's
//!   [`SessionSubscriptions`] forwards `notifications/resources/updated` on the session.
//! - 2026-07-28 clients open a `subscriptions/listen` stream naming the URIs ([`listen`]).
//!
//! Either way the subscriber's access (collections, tenant) is fixed when it subscribes and
//! built into its [`ChangeWatch`], so it only ever hears about changes it may read. Each
//! notification's `_meta` says when the newest change it reports became searchable
//! (`freshet/indexed_at`) and when the notification left (`freshet/sent_at`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rmcp::model::{
    NotificationMetaObject, ResourceUpdatedNotification, ResourceUpdatedNotificationParam,
    ServerNotification, SubscriptionFilter,
};
use rmcp::service::{Peer, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Map, Value};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::auth::Access;
use crate::engine::{ChangeWatch, Published, QueryError, Search, WatchTarget};
use crate::time::{now_ms, rfc3339_ms};

/// URI template of a collection's change feed.
pub const CHANGES_TEMPLATE: &str = "freshet://{collection}/changes";

/// A freshet resource.
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceUri {
    /// `freshet://{collection}/{id}`.
    Document {
        /// The collection.
        collection: String,
        /// The document id, percent-decoded.
        id: String,
    },
    /// `freshet://{collection}/changes[?filter=…]`.
    Changes {
        /// The collection.
        collection: String,
        /// The filter, if the URI carries one.
        filter: Option<Map<String, Value>>,
    },
}

impl ResourceUri {
    /// Reads a resource URI; the error says what a good one looks like.
    pub fn parse(uri: &str) -> Result<ResourceUri, String> {
        let expected = || {
            format!(
                "expected a URI like freshet://{{collection}}/{{id}} or {CHANGES_TEMPLATE}, got `{uri}`"
            )
        };
        let rest = uri.strip_prefix("freshet://").ok_or_else(expected)?;
        let (collection, path) = rest.split_once('/').ok_or_else(expected)?;
        if collection.is_empty() {
            return Err(expected());
        }
        let collection = collection.to_string();
        if path == "changes" {
            return Ok(ResourceUri::Changes {
                collection,
                filter: None,
            });
        }
        if let Some(query) = path.strip_prefix("changes?") {
            let mut filter = None;
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if key != "filter" {
                    return Err(format!(
                        "`{key}` is not a parameter of {CHANGES_TEMPLATE}; the only one is `filter` (percent-encoded JSON)"
                    ));
                }
                let text = percent_decode(value)
                    .ok_or_else(|| "`filter` is not valid percent-encoded UTF-8".to_string())?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => filter = Some(map),
                    _ => return Err("`filter` must be a JSON object, percent-encoded".into()),
                }
            }
            return Ok(ResourceUri::Changes { collection, filter });
        }
        let id = percent_decode(path).ok_or_else(expected)?;
        if id.is_empty() {
            return Err(expected());
        }
        Ok(ResourceUri::Document { collection, id })
    }

    /// The watch a subscriber with `access` holds on this resource.
    pub fn watch(&self, search: &Search, access: &Access) -> Result<ChangeWatch, QueryError> {
        match self {
            ResourceUri::Document { collection, id } => {
                search.watch(collection, WatchTarget::Document(id.clone()), access)
            }
            ResourceUri::Changes { collection, filter } => {
                search.watch(collection, WatchTarget::Changes(filter.clone()), access)
            }
        }
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URIs among `watches` that `batch` changed, each with when its newest change became
/// searchable.
fn updated<'a>(
    watches: impl Iterator<Item = (&'a String, &'a ChangeWatch)>,
    batch: &[Published],
) -> Vec<(String, i64)> {
    watches
        .filter_map(|(uri, watch)| {
            batch
                .iter()
                .filter(|p| watch.matches(p))
                .map(|p| p.change.stamp.indexed_at_ms)
                .max()
                .map(|at| (uri.clone(), at))
        })
        .collect()
}

/// A `notifications/resources/updated` for `uri`.
fn notification(uri: String, indexed_at_ms: Option<i64>) -> ResourceUpdatedNotificationParam {
    let mut meta = Map::new();
    if let Some(at) = indexed_at_ms {
        meta.insert("freshet/indexed_at".into(), Value::from(rfc3339_ms(at)));
    }
    meta.insert("freshet/sent_at".into(), Value::from(rfc3339_ms(now_ms())));
    let mut param = ResourceUpdatedNotificationParam::new(uri);
    param.meta = Some(NotificationMetaObject::from(meta));
    param
}

/// What one wait on the change stream gave.
enum Next {
    /// These URIs changed (`None`: when is unknown).
    Updated(Vec<(String, Option<i64>)>),
    /// The subscription is over.
    Stop,
}

/// Waits for the next batch that concerns `watches`. A subscriber that fell too far behind
/// is told that every watched URI may have changed.
async fn next_updates(
    changes: &mut Receiver<Arc<Vec<Published>>>,
    cancel: &CancellationToken,
    watches: impl Fn(&[Published]) -> Option<Vec<(String, i64)>>,
    all: impl Fn() -> Option<Vec<String>>,
) -> Next {
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => return Next::Stop,
            received = changes.recv() => received,
        };
        let updates: Vec<(String, Option<i64>)> = match received {
            Ok(batch) => match watches(&batch) {
                None => return Next::Stop,
                Some(found) => found.into_iter().map(|(u, at)| (u, Some(at))).collect(),
            },
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!("a subscriber missed {missed} batches: notifying all its URIs");
                match all() {
                    None => return Next::Stop,
                    Some(uris) => uris.into_iter().map(|u| (u, None)).collect(),
                }
            }
            Err(RecvError::Closed) => return Next::Stop,
        };
        if !updates.is_empty() {
            return Next::Updated(updates);
        }
    }
}

/// The `resources/subscribe` subscriptions of one 2025-11-25 session (or stdio connection):
/// shared by the session's handler clones, forwarded by one task that ends with the session.
#[derive(Clone, Default)]
pub struct SessionSubscriptions(Arc<Subscribed>);

#[derive(Default)]
struct Subscribed {
    watches: Mutex<HashMap<String, ChangeWatch>>,
    /// Stops the forwarding task when the session's handler goes away.
    forwarder: Mutex<Option<DropGuard>>,
}

impl SessionSubscriptions {
    /// Adds (or replaces) the subscription to `uri`, starting the forwarder on first use.
    pub fn add(&self, search: &Search, uri: String, watch: ChangeWatch, peer: Peer<RoleServer>) {
        self.0.watches.lock().insert(uri, watch);
        let mut forwarder = self.0.forwarder.lock();
        if forwarder.is_none() {
            let cancel = CancellationToken::new();
            // Subscribed before answering, so no change after the answer is missed.
            let changes = search.subscribe_changes();
            tokio::spawn(forward(
                changes,
                Arc::downgrade(&self.0),
                peer,
                cancel.clone(),
            ));
            *forwarder = Some(cancel.drop_guard());
        }
    }

    /// Removes the subscription to `uri`; false if there was none.
    pub fn remove(&self, uri: &str) -> bool {
        self.0.watches.lock().remove(uri).is_some()
    }
}

async fn forward(
    mut changes: Receiver<Arc<Vec<Published>>>,
    subscribed: Weak<Subscribed>,
    peer: Peer<RoleServer>,
    cancel: CancellationToken,
) {
    let matching = |batch: &[Published]| {
        let s = subscribed.upgrade()?;
        let watches = s.watches.lock();
        Some(updated(watches.iter(), batch))
    };
    let all = || {
        let s = subscribed.upgrade()?;
        let uris = s.watches.lock().keys().cloned().collect();
        Some(uris)
    };
    while let Next::Updated(uris) = next_updates(&mut changes, &cancel, matching, all).await {
        for (uri, at) in uris {
            if let Err(e) = peer.notify_resource_updated(notification(uri, at)).await {
                tracing::debug!("subscriber gone: {e}");
                return;
            }
        }
    }
}

/// Change receivers opened when a `subscriptions/listen` request was accepted, before rmcp
/// acknowledges it, so that no change between the acknowledgment and [`listen`] is missed.
/// Any receiver opened before a stream's acknowledgment serves it (an older one at most
/// reports a change twice), so the order in which streams take them does not matter.
#[derive(Clone, Default)]
pub struct ListenReceivers(Arc<Mutex<Vec<ChangeReceiver>>>);

/// The changes of every applied batch, as one subscriber receives them.
type ChangeReceiver = Receiver<Arc<Vec<Published>>>;

/// Receivers kept waiting at most: an accepted request that never reaches [`listen`] (its
/// acknowledgment failed) must not leave receivers behind without bound.
const MAX_EARLY_RECEIVERS: usize = 16;

impl ListenReceivers {
    /// Opens a receiver for a stream about to be acknowledged.
    pub fn open(&self, search: &Search) {
        let mut waiting = self.0.lock();
        if waiting.len() >= MAX_EARLY_RECEIVERS {
            waiting.remove(0);
        }
        waiting.push(search.subscribe_changes());
    }

    fn take(&self) -> Option<ChangeReceiver> {
        self.0.lock().pop()
    }
}

/// The URIs of a `subscriptions/listen` request freshet can serve.
pub fn accepted(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let mut accepted = SubscriptionFilter::new();
    accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
        uris.iter()
            .filter(|uri| ResourceUri::parse(uri).is_ok())
            .cloned()
            .collect()
    });
    accepted
}

/// Serves one `subscriptions/listen` stream until the client ends it. URIs of collections
/// the caller may not read are accepted but never notified (fail closed, and no way to
/// probe which collections exist).
pub async fn listen(
    search: Arc<Search>,
    context: SubscriptionContext,
    access: Access,
    early: &ListenReceivers,
) -> Result<(), McpError> {
    let mut changes = early.take().unwrap_or_else(|| search.subscribe_changes());
    let watches: HashMap<String, ChangeWatch> = context
        .accepted()
        .resource_subscriptions
        .iter()
        .flatten()
        .filter_map(|uri| {
            let watch = ResourceUri::parse(uri).ok()?.watch(&search, &access).ok()?;
            Some((uri.clone(), watch))
        })
        .collect();
    // The stream ends through `context`; this token is only for `next_updates`.
    let cancel = CancellationToken::new();
    let sink = context.sink().clone();
    let matching = |batch: &[Published]| Some(updated(watches.iter(), batch));
    let all = || Some(watches.keys().cloned().collect());
    loop {
        let wait = next_updates(&mut changes, &cancel, matching, all);
        let uris = tokio::select! {
            () = context.cancelled() => return Ok(()),
            next = wait => match next {
                Next::Updated(uris) => uris,
                Next::Stop => return Ok(()),
            },
        };
        for (uri, at) in uris {
            let note = ServerNotification::ResourceUpdatedNotification(
                ResourceUpdatedNotification::new(notification(uri, at)),
            );
            if let Err(e) = sink.send(note).await {
                tracing::debug!("listen stream gone: {e}");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_uris_parse() {
        assert_eq!(
            ResourceUri::parse("freshet://articles/a/b%20c"),
            Ok(ResourceUri::Document {
                collection: "articles".into(),
                id: "a/b c".into()
            })
        );
        assert_eq!(
            ResourceUri::parse("freshet://articles/changes"),
            Ok(ResourceUri::Changes {
                collection: "articles".into(),
                filter: None
            })
        );
        assert_eq!(
            ResourceUri::parse("freshet://articles/%63hanges"),
            Ok(ResourceUri::Document {
                collection: "articles".into(),
                id: "changes".into()
            })
        );
        let Ok(ResourceUri::Changes {
            filter: Some(filter),
            ..
        }) = ResourceUri::parse(
            "freshet://articles/changes?filter=%7B%22priority%22%3A%7B%22gte%22%3A5%7D%7D",
        )
        else {
            panic!("a filtered changes URI")
        };
        assert_eq!(
            Value::Object(filter),
            serde_json::json!({"priority": {"gte": 5}})
        );
        for bad in [
            "test://watched-resource",
            "freshet://articles",
            "freshet://articles/",
            "freshet:///x",
            "freshet://a/%zz",
            "freshet://a/changes?filter=[1]",
            "freshet://a/changes?since=x",
        ] {
            assert!(ResourceUri::parse(bad).is_err(), "{bad}");
        }
        let err = ResourceUri::parse("test://watched-resource").unwrap_err();
        assert!(err.contains("freshet://{collection}/changes"), "{err}");
    }
}
