//! The span processor between the request path and the OTLP exporter.
//!
//! Ending a span only offers it to a bounded queue: when the queue is full
//! the span is dropped and counted, never waited for. One thread of its own,
//! with a single-threaded Tokio runtime for the exporter's client, sends the
//! queue in batches. The SDK's batch processor drops silently; operators need
//! the count to know a trace is incomplete because export fell behind.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use super::settings::BatchSettings;
use super::{DropReason, ExportCounters};

#[derive(Debug)]
enum Message {
    Span(Box<SpanData>),
    /// Export everything queued so far, then answer.
    Flush(mpsc::Sender<()>),
    Shutdown(mpsc::Sender<()>),
}

#[derive(Debug)]
pub(crate) struct QueueingProcessor {
    queue: SyncSender<Message>,
    worker: Mutex<Option<JoinHandle<()>>>,
    export_timeout: Duration,
    counters: ExportCounters,
}

impl QueueingProcessor {
    /// Starts the export thread. `build` makes the exporter inside the
    /// thread's runtime (gRPC channels spawn their connection task on the
    /// runtime they are made in); its error is returned here.
    pub(crate) fn start<E, B>(
        build: B,
        resource: Resource,
        batch: BatchSettings,
        counters: ExportCounters,
    ) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        B: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (queue, incoming) = mpsc::sync_channel(batch.max_queue_size);
        let (built_tx, built_rx) = mpsc::channel::<Result<(), String>>();
        let worker_counters = counters.clone();
        let worker = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = built_tx.send(Err(format!("export runtime: {e}")));
                        return;
                    }
                };
                let exporter = {
                    let _entered = runtime.enter();
                    build()
                };
                let exporter = match exporter {
                    Ok(mut exporter) => {
                        exporter.set_resource(&resource);
                        let _ = built_tx.send(Ok(()));
                        exporter
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                        return;
                    }
                };
                Worker {
                    runtime,
                    exporter,
                    batch,
                    counters: worker_counters,
                    failing: false,
                }
                .run(incoming);
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        match built_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                queue,
                worker: Mutex::new(Some(worker)),
                export_timeout: batch.export_timeout,
                counters,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the export thread ended before its exporter was built".into()),
        }
    }

    /// Sends a control message and waits for its answer, bounded.
    fn ask(
        &self,
        make: impl FnOnce(mpsc::Sender<()>) -> Message,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (tx, rx) = mpsc::channel();
        self.queue
            .send(make(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        rx.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueingProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counters.dropped(DropReason::QueueFull, 1),
            Err(TrySendError::Disconnected(_)) => self.counters.dropped(DropReason::ShutDown, 1),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, self.export_timeout * 2)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let answered = self.ask(Message::Shutdown, timeout);
        if answered.is_ok()
            && let Ok(mut worker) = self.worker.lock()
            && let Some(handle) = worker.take()
        {
            let _ = handle.join();
        }
        answered
    }

    fn set_resource(&mut self, _resource: &Resource) {
        // The exporter was given the resource when it was built.
    }
}

struct Worker<E: SpanExporter> {
    runtime: tokio::runtime::Runtime,
    exporter: E,
    batch: BatchSettings,
    counters: ExportCounters,
    /// Whether the last export failed: failures are logged once per outage.
    failing: bool,
}

impl<E: SpanExporter> Worker<E> {
    /// Exports until shut down or until the processor is gone, then stops
    /// the exporter.
    fn run(mut self, incoming: Receiver<Message>) {
        self.serve(&incoming);
        let _entered = self.runtime.enter();
        let _ = self.exporter.shutdown();
    }

    fn serve(&mut self, incoming: &Receiver<Message>) {
        let mut pending: Vec<SpanData> = Vec::with_capacity(self.batch.max_export_batch_size);
        let mut next_export = Instant::now() + self.batch.schedule_delay;
        loop {
            let wait = next_export.saturating_duration_since(Instant::now());
            match incoming.recv_timeout(wait) {
                Ok(Message::Span(span)) => {
                    pending.push(*span);
                    if pending.len() >= self.batch.max_export_batch_size {
                        self.export(&mut pending);
                        next_export = Instant::now() + self.batch.schedule_delay;
                    }
                }
                Ok(Message::Flush(answer)) => {
                    let shut_down = self.drain(incoming, &mut pending);
                    let _ = answer.send(());
                    if shut_down {
                        return;
                    }
                }
                Ok(Message::Shutdown(answer)) => {
                    self.drain(incoming, &mut pending);
                    let _ = answer.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.export(&mut pending);
                    next_export = Instant::now() + self.batch.schedule_delay;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.export(&mut pending);
                    return;
                }
            }
        }
    }

    /// Exports what is queued now, in batches, then answers the flushes and
    /// shutdowns queued with it; true when one of them was a shutdown.
    fn drain(&mut self, incoming: &Receiver<Message>, pending: &mut Vec<SpanData>) -> bool {
        let mut answers = Vec::new();
        let mut shut_down = false;
        while let Ok(message) = incoming.try_recv() {
            match message {
                Message::Span(span) => {
                    pending.push(*span);
                    if pending.len() >= self.batch.max_export_batch_size {
                        self.export(pending);
                    }
                }
                Message::Flush(answer) => answers.push(answer),
                Message::Shutdown(answer) => {
                    shut_down = true;
                    answers.push(answer);
                }
            }
        }
        self.export(pending);
        for answer in answers {
            let _ = answer.send(());
        }
        shut_down
    }

    fn export(&mut self, pending: &mut Vec<SpanData>) {
        if pending.is_empty() {
            return;
        }
        let spans = std::mem::take(pending);
        let n = spans.len() as u64;
        let timeout = self.batch.export_timeout;
        let exporter = &self.exporter;
        // The timer is made inside the runtime: it needs its clock.
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, exporter.export(spans)).await });
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        match error {
            None => {
                self.counters.exported.inc_by(n);
                if std::mem::replace(&mut self.failing, false) {
                    tracing::info!("span export recovered");
                }
            }
            Some(error) => {
                self.counters.dropped(DropReason::ExportFailed, n);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, spans = n, "span export failed; dropping spans until it recovers");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl SpanExporter for Counting {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.0.fetch_add(batch.len(), Ordering::SeqCst);
            async { Ok(()) }
        }
    }

    #[derive(Debug)]
    struct Refusing;

    impl SpanExporter for Refusing {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("collector down".into()))
        }
    }

    fn settings() -> BatchSettings {
        BatchSettings {
            // Only flushes and shutdown export, so the test decides when.
            schedule_delay: Duration::from_secs(3600),
            max_queue_size: 64,
            max_export_batch_size: 4,
            export_timeout: Duration::from_secs(5),
        }
    }

    fn provider<E: SpanExporter + 'static>(
        exporter: E,
        counters: &ExportCounters,
    ) -> SdkTracerProvider {
        let processor = QueueingProcessor::start(
            move || Ok(exporter),
            Resource::builder_empty().build(),
            settings(),
            counters.clone(),
        )
        .unwrap();
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build()
    }

    #[test]
    fn ended_spans_are_exported_in_batches_on_flush_and_shutdown() {
        let exporter = Counting::default();
        let counters = ExportCounters::default();
        let provider = provider(exporter.clone(), &counters);
        let tracer = provider.tracer("test");
        for _ in 0..10 {
            tracer.start("span").end();
        }
        provider.force_flush().unwrap();
        assert_eq!(exporter.0.load(Ordering::SeqCst), 10);
        assert_eq!(counters.exported.get(), 10);
        tracer.start("last").end();
        provider.shutdown().unwrap();
        assert_eq!(exporter.0.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn refused_batches_are_counted_as_dropped() {
        let counters = ExportCounters::default();
        let provider = provider(Refusing, &counters);
        let tracer = provider.tracer("test");
        for _ in 0..6 {
            tracer.start("span").end();
        }
        provider.force_flush().unwrap();
        let dropped = counters
            .dropped
            .get_or_create(&super::super::DropLabels {
                reason: "export_failed",
            })
            .get();
        assert_eq!(dropped, 6);
        assert_eq!(counters.exported.get(), 0);
        provider.shutdown().unwrap();
    }
}
