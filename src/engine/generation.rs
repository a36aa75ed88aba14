//! Collection generations: a settings change (mapping, chunking, embedding model) rebuilds a
//! persisted collection beside the generation that keeps serving.
//!
//! Each persisted collection directory (`<data_dir>/collections/<name>/`) holds one or two
//! generations and a `generation` file naming the one that serves. Generation 1 keeps its
//! `text/` and `vectors/` directly in the collection directory (the layout from before
//! generations existed); generation `n > 1` keeps them in `gen-<n>/`.
//!
//! At start, a generation whose checkpoint was written under other settings is opened
//! *frozen* ([`Frozen`]): read-only, as of its checkpoint, never updated. The next
//! generation is built beside it by the normal pipeline (the writer's view of the
//! [`super::Catalog`] holds it, queries see the frozen one), read from the topics' start, or
//! from its own checkpoint when a crash interrupted an earlier attempt with the same
//! settings. The frozen generation's partitions do not count for `/readyz`: it serves.
//!
//! The swap ([`Ingest::swap_caught_up_generations`], on the checkpoint thread) happens once
//! the new generation has reached the high watermarks first read after it started (the rule
//! readiness uses) *and* a committed checkpoint of it covers them, so a crash after the swap
//! never opens a generation behind its catch-up. It writes the `generation` file (atomically:
//! the one switch a crash sees either before or after), exchanges the generations in the
//! catalog, and removes the old generation's files. A crash before that restarts (or
//! resumes) the rebuild and keeps serving the old generation.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::{Checkpoint, PartitionCheckpoint};
use crate::time::rfc3339_ms;
use crate::view::OffsetTarget;

use super::{Collection, Ingest};

/// The file in a collection's directory that names its serving generation.
const CURRENT_FILE: &str = "generation";

/// Wait after a failed swap (the `generation` file could not be written) before retrying.
const SWAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Where generation `n` of the collection in `dir` keeps its files.
pub(super) fn files_dir(dir: &Path, n: u64) -> PathBuf {
    if n <= 1 {
        dir.to_path_buf()
    } else {
        dir.join(format!("gen-{n}"))
    }
}

/// The serving generation recorded in `dir`: 1 when none is recorded (a new collection, or
/// one written before generations existed). A damaged file counts as none: the generation
/// opened then has no checkpoint and is rebuilt from the topics.
pub(super) fn current(dir: &Path) -> u64 {
    let path = dir.join(CURRENT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                tracing::warn!(
                    "{} does not hold a generation number: opening generation 1",
                    path.display()
                );
                1
            }
        },
        Err(_) => 1,
    }
}

/// Records generation `n` as the serving one: temporary file, fsync, rename, directory
/// fsync, so a crash leaves either the old number or the new one.
pub(super) fn make_current(dir: &Path, n: u64) -> io::Result<()> {
    let tmp = dir.join(format!("{CURRENT_FILE}.tmp"));
    {
        let mut file = fs::File::create(&tmp)?;
        writeln!(file, "{n}")?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CURRENT_FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// Removes the files of every generation in `dir` except those in `keep`.
pub(super) fn remove_others(dir: &Path, keep: &[u64]) {
    let remove = |path: PathBuf| {
        if path.exists()
            && let Err(e) = fs::remove_dir_all(&path)
        {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    };
    if !keep.contains(&1) {
        remove(dir.join("text"));
        remove(dir.join("vectors"));
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok());
        if n.is_some_and(|n| !keep.contains(&n)) {
            remove(entry.path());
        }
    }
}

/// What a generation serving while the next one is built answers from.
#[derive(Debug)]
pub struct Frozen {
    /// Where its checkpoint left each partition: what its answers cover.
    pub partitions: Vec<PartitionCheckpoint>,
    /// When that checkpoint was written (ms since the epoch).
    pub as_of_ms: i64,
    /// The generation being built to replace it.
    pub next_generation: u64,
    /// Set when its vectors are in another vector space than the current settings' queries
    /// (embedding model, vector field or dimension changed): why vector search is off.
    pub vectors_unusable: Option<String>,
}

impl Frozen {
    /// The frozen state of a generation opened from `checkpoint`, whose settings differ from
    /// `c`'s (the current ones).
    pub(super) fn of(c: &Collection, checkpoint: &Checkpoint, next_generation: u64) -> Frozen {
        Frozen {
            partitions: checkpoint.partitions.clone(),
            as_of_ms: checkpoint.created_at_ms,
            next_generation,
            vectors_unusable: vectors_unusable(&checkpoint.fingerprint, &c.fingerprint()),
        }
    }

    /// What answers from this generation should say.
    pub fn note(&self, generation: u64) -> String {
        let mut note = format!(
            "rebuilding after a settings change: answers come from generation {generation} as of {} \
             (not updated meanwhile); generation {} replaces it once caught up",
            rfc3339_ms(self.as_of_ms),
            self.next_generation
        );
        if let Some(why) = &self.vectors_unusable {
            note.push_str(&format!(
                "; vector search is off until then ({why}), hybrid searches use BM25 only"
            ));
        }
        note
    }
}

/// Why vectors stored under the settings fingerprint `stored` cannot answer queries made
/// under `current`, if they cannot: the embedder identity (model, dimension) or the vector
/// field differs.
fn vectors_unusable(stored: &str, current: &str) -> Option<String> {
    let parse = |f: &str| serde_json::from_str::<serde_json::Value>(f).ok();
    let (Some(stored), Some(current)) = (parse(stored), parse(current)) else {
        return Some("its settings cannot be read".into());
    };
    if stored["vector_field"] != current["vector_field"] {
        return Some("the vector field changed".into());
    }
    if stored["embedder"] != current["embedder"] {
        return Some("the embedding settings changed".into());
    }
    None
}

/// A collection whose next generation is being built.
pub(super) struct Pending {
    /// The collection.
    name: String,
    /// The offsets the new generation must reach before it serves: the high watermarks of
    /// its partitions first read after it started (`None` until known).
    target: Option<Vec<OffsetTarget>>,
    /// No swap attempt before this after one failed.
    retry_at: Option<Instant>,
}

impl Pending {
    pub(super) fn new(name: &str) -> Pending {
        Pending {
            name: name.to_string(),
            target: None,
            retry_at: None,
        }
    }
}

impl Ingest {
    /// Swaps in every next generation that has caught up and checkpointed that (see the
    /// module docs); the old generations' files are removed. Returns the collections swapped.
    pub fn swap_caught_up_generations(&self) -> Vec<String> {
        let mut pending = self.generations.lock();
        let mut swapped = Vec::new();
        pending.retain_mut(|p| {
            let done = self.try_swap(p);
            if done {
                swapped.push(p.name.clone());
            }
            !done
        });
        swapped
    }

    /// Returns true when `p` is settled (swapped, or no longer rebuilding).
    fn try_swap(&self, p: &mut Pending) -> bool {
        if p.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        let Some((old, next)) = self.catalog.rebuild_of(&p.name) else {
            return true;
        };
        if p.target.is_none() {
            p.target = self.freshness.catch_up_target(&next.config.topics);
            if let Some(target) = &p.target {
                let left: i64 = target
                    .iter()
                    .map(|(topic, partition, high)| {
                        let next = self.freshness.progress().next_offset(topic, *partition);
                        (high - next.unwrap_or(0)).max(0)
                    })
                    .sum();
                tracing::info!(
                    collection = p.name,
                    generation = next.generation(),
                    "rebuilding: {left} records left to read up to the partitions' ends as first read"
                );
            }
        }
        let Some(target) = &p.target else {
            return false;
        };
        let Some(np) = &next.persisted else {
            return true;
        };
        let target = self.freshness.still_owned(target);
        if !self.freshness.progress().reached_all(&target) || !covers(&np.last.lock(), &target) {
            return false;
        }
        if let Err(e) = make_current(&np.dir, np.generation) {
            tracing::error!(
                collection = p.name,
                "cannot record generation {} as the serving one in {}: {e}; generation {} keeps serving",
                np.generation,
                np.dir.display(),
                np.generation - 1
            );
            p.retry_at = Some(Instant::now() + SWAP_RETRY_AFTER);
            return false;
        }
        self.catalog.finish_rebuild(&p.name);
        next.building
            .store(false, std::sync::atomic::Ordering::Release);
        self.freshness
            .count_for_readiness(&next.config.topics, true);
        remove_others(&np.dir, &[np.generation]);
        tracing::info!(
            collection = p.name,
            generation = np.generation,
            documents = next.view.len(),
            old_documents = old.view.len(),
            "the rebuilt generation caught up and serves now; the previous generation's files are removed"
        );
        true
    }

    /// Names of the collections whose next generation is being built.
    pub fn rebuilding(&self) -> Vec<String> {
        self.generations
            .lock()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }
}

/// True when `checkpoint` resumes every partition at or past its target.
fn covers(checkpoint: &Checkpoint, target: &[OffsetTarget]) -> bool {
    target.iter().all(|(topic, partition, offset)| {
        *offset <= 0
            || checkpoint.partitions.iter().any(|p| {
                p.topic == **topic && p.partition == *partition && p.next_offset >= *offset
            })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn generation_file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(current(dir.path()), 1, "none recorded");
        make_current(dir.path(), 3).unwrap();
        assert_eq!(current(dir.path()), 3);
        fs::write(dir.path().join(CURRENT_FILE), "garbage").unwrap();
        assert_eq!(current(dir.path()), 1);
        assert_eq!(files_dir(dir.path(), 1), dir.path());
        assert_eq!(files_dir(dir.path(), 2), dir.path().join("gen-2"));
    }

    #[test]
    fn removing_other_generations_keeps_the_named_ones() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["text", "vectors", "gen-2/text", "gen-3/text", "gen-x"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        make_current(dir.path(), 2).unwrap();
        remove_others(dir.path(), &[2]);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["gen-2", "gen-x", "generation"]);
        remove_others(dir.path(), &[1]);
        assert!(!dir.path().join("gen-2").exists());
    }

    #[test]
    fn vectors_are_unusable_when_the_embedder_or_vector_field_changed() {
        let fp = |embedder: &str, field: &str| {
            serde_json::json!({"embedder": embedder, "vector_field": field, "chunk_tokens": 1})
                .to_string()
        };
        assert_eq!(vectors_unusable(&fp("a", "v"), &fp("a", "v")), None);
        assert!(vectors_unusable(&fp("a", "v"), &fp("b", "v")).is_some());
        assert!(vectors_unusable(&fp("a", "v"), &fp("a", "w")).is_some());
        assert!(vectors_unusable("not json", &fp("a", "v")).is_some());
    }

    #[test]
    fn a_checkpoint_covers_a_target_only_when_every_partition_reached_it() {
        let mut cp = Checkpoint::empty(String::new());
        let t: Arc<str> = Arc::from("t");
        assert!(covers(&cp, &[(Arc::clone(&t), 0, 0)]), "an empty partition");
        assert!(!covers(&cp, &[(Arc::clone(&t), 0, 5)]));
        cp.partitions.push(PartitionCheckpoint {
            topic: "t".into(),
            partition: 0,
            next_offset: 5,
            topic_id: None,
        });
        assert!(covers(&cp, &[(Arc::clone(&t), 0, 5)]));
        assert!(!covers(&cp, &[(Arc::clone(&t), 0, 5), (t, 1, 1)]));
    }
}
