//! Query embedding as the pipeline uses it: an LRU of recent embeddings (a
//! repeated question is not embedded again), and micro-batching of
//! concurrent requests. Batching adds no wait: a worker takes whatever is
//! queued when it becomes free, so an idle cell embeds one query at once and
//! a busy one embeds many per model call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{EmbedError, Embedder};

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, (Arc<Vec<f32>>, u64)>,
    tick: u64,
}

impl Lru {
    fn get(&mut self, key: &str) -> Option<Arc<Vec<f32>>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(v, t)| {
            *t = tick;
            v.clone()
        })
    }

    fn put(&mut self, key: String, value: Vec<f32>, capacity: usize) {
        self.tick += 1;
        self.entries.insert(key, (Arc::new(value), self.tick));
        if self.entries.len() > capacity {
            // Drop the least recently used tenth at once, so eviction is rare.
            let mut ticks: Vec<u64> = self.entries.values().map(|(_, t)| *t).collect();
            let cut = (capacity / 10 + 1).min(ticks.len() - 1);
            let (_, nth, _) = ticks.select_nth_unstable(cut);
            let threshold = *nth;
            self.entries.retain(|_, (_, t)| *t > threshold);
        }
    }
}

/// The pipeline's embedder. Cheap to clone.
#[derive(Clone)]
pub struct QueryEmbedder {
    inner: Arc<dyn Embedder>,
    jobs: mpsc::Sender<Job>,
    lru: Arc<Mutex<Lru>>,
    capacity: usize,
    dimensions: usize,
}

impl QueryEmbedder {
    /// Starts the batching worker on the current runtime: it embeds up to
    /// `max_batch` waiting questions in one model call, and the `capacity`
    /// most recent embeddings are kept (about 1.5 KiB each at 384 dimensions).
    pub fn new(inner: Arc<dyn Embedder>, capacity: usize, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let dimensions = inner.dimensions();
        tokio::spawn(worker(inner.clone(), rx, max_batch.max(1)));
        Self {
            inner,
            jobs: tx,
            lru: Arc::default(),
            capacity,
            dimensions,
        }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Tokens of `text` in the model's tokenizer.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.inner.count_tokens(text)
    }

    /// The embedding of `text`.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        if self.capacity > 0
            && let Some(v) = self.lru.lock().ok().and_then(|mut l| l.get(text))
        {
            return Ok(v.as_ref().clone());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                text: text.to_owned(),
                reply,
            })
            .await
            .map_err(|_| EmbedError::Inference("the embedding worker stopped".into()))?;
        let v = answer
            .await
            .map_err(|_| EmbedError::Inference("the embedding worker stopped".into()))??;
        if self.capacity > 0
            && let Ok(mut l) = self.lru.lock()
        {
            l.put(text.to_owned(), v.clone(), self.capacity);
        }
        Ok(v)
    }
}

async fn worker(inner: Arc<dyn Embedder>, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let texts: Vec<String> = jobs.iter().map(|j| j.text.clone()).collect();
        let model = inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed_batch(&refs)
        })
        .await
        .unwrap_or_else(|e| Err(EmbedError::Inference(format!("embedding task failed: {e}"))));
        match result {
            Ok(vectors) if vectors.len() == jobs.len() => {
                for (job, v) in jobs.into_iter().zip(vectors) {
                    let _ = job.reply.send(Ok(v));
                }
            }
            Ok(_) => {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(EmbedError::Inference("batch size mismatch".into())));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts model calls and texts; embeds a text as [len, 1].
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Embedder for Counting {
        fn dimensions(&self) -> usize {
            2
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0
                .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len()
        }
    }

    #[tokio::test]
    async fn repeated_text_is_embedded_once() {
        let model = Arc::new(Counting(Default::default()));
        let e = QueryEmbedder::new(model.clone(), 10, 32);
        assert_eq!(e.embed("abc").await.unwrap(), vec![3.0, 1.0]);
        assert_eq!(e.embed("abc").await.unwrap(), vec![3.0, 1.0]);
        assert_eq!(model.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_all_answered_correctly() {
        let model = Arc::new(Counting(Default::default()));
        let e = QueryEmbedder::new(model, 10, 32);
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let e = e.clone();
                tokio::spawn(async move { (i, e.embed(&"x".repeat(i + 1)).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (i, v) = t.await.unwrap();
            assert_eq!(v, vec![(i + 1) as f32, 1.0]);
        }
    }

    #[test]
    fn lru_stays_bounded() {
        let mut lru = Lru::default();
        for i in 0..100 {
            lru.put(format!("{i}"), vec![i as f32], 20);
        }
        assert!(lru.entries.len() <= 20);
        assert!(lru.get("99").is_some());
    }
}
