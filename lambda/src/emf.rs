//! [`EmfRecorder`]: a `metrics` recorder that writes CloudWatch Embedded Metric Format.
//!
//! Counters add up and histograms collect values (at most 100 per flush, EMF's limit) until
//! [`EmfRecorder::flush`], which prints one JSON line per set of labels: the labels become
//! dimensions next to the function's own, and the invocation's request and trace ids ride
//! along as properties. In Lambda, printing to stdout is all EMF needs.
//!
//! The `metrics_cloudwatch_embedded` crate (0.10) writes the same documents, but logs an error
//! for each histogram value past the 100 a document holds. The processor records one
//! `PushLatency` value per push, so one fan-out to 1,000 subscribers would log 900 errors per
//! invocation. This recorder keeps the first 100 values of a flush and drops the rest quietly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::{Map, Value, json};
use streamer_core::metric;

/// EMF keeps at most this many values per metric in one document.
const MAX_VALUES: usize = 100;

#[derive(Debug, Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        let mut values = self.0.lock().expect("metric lock");
        if values.len() < MAX_VALUES {
            values.push(value);
        }
    }
}

#[derive(Debug, Default)]
struct Sum(AtomicU64);

impl CounterFn for Sum {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Level(Mutex<f64>);

impl GaugeFn for Level {
    fn increment(&self, value: f64) {
        *self.0.lock().expect("metric lock") += value;
    }

    fn decrement(&self, value: f64) {
        *self.0.lock().expect("metric lock") -= value;
    }

    fn set(&self, value: f64) {
        *self.0.lock().expect("metric lock") = value;
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Counter(Arc<Sum>),
    Gauge(Arc<Level>),
    Histogram(Arc<Values>),
}

/// Labels of a metric, sorted.
type Labels = Vec<(String, String)>;

/// Collects metrics between flushes.
#[derive(Debug, Clone, Default)]
pub struct EmfRecorder {
    slots: Arc<Mutex<BTreeMap<(Labels, String), Slot>>>,
}

fn labels(key: &Key) -> Labels {
    let mut labels: Labels = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    labels
}

impl EmfRecorder {
    fn slot(&self, key: &Key, make: impl FnOnce() -> Slot) -> Slot {
        let mut slots = self.slots.lock().expect("metrics lock");
        slots
            .entry((labels(key), key.name().to_owned()))
            .or_insert_with(make)
            .clone()
    }

    /// The EMF documents of everything recorded since the last flush (one per label set;
    /// none when nothing was recorded), and a fresh start.
    ///
    /// `dimensions` are added to every document (the function, say); `properties` ride
    /// along without being dimensions (request and trace ids).
    pub fn flush(
        &self,
        namespace: &str,
        dimensions: &[(&str, &str)],
        properties: &[(&str, &str)],
        timestamp_ms: i64,
    ) -> Vec<String> {
        let mut groups: BTreeMap<Labels, Vec<(String, Value)>> = BTreeMap::new();
        for ((labels, name), slot) in self.slots.lock().expect("metrics lock").iter() {
            let value = match slot {
                Slot::Counter(sum) => match sum.0.swap(0, Ordering::Relaxed) {
                    0 => continue,
                    n => json!(n),
                },
                Slot::Gauge(level) => json!(*level.0.lock().expect("metric lock")),
                Slot::Histogram(values) => {
                    let values = std::mem::take(&mut *values.0.lock().expect("metric lock"));
                    if values.is_empty() {
                        continue;
                    }
                    json!(values)
                }
            };
            groups
                .entry(labels.clone())
                .or_default()
                .push((name.clone(), value));
        }
        groups
            .into_iter()
            .map(|(labels, metrics)| {
                let mut document = Map::new();
                let mut names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
                names.extend(labels.iter().map(|(k, _)| k.as_str()));
                let definitions: Vec<Value> = metrics
                    .iter()
                    .map(|(name, _)| json!({ "Name": name, "Unit": metric::unit(name) }))
                    .collect();
                document.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": namespace,
                            "Dimensions": [names],
                            "Metrics": definitions,
                        }],
                    }),
                );
                for (key, value) in dimensions.iter().chain(properties) {
                    document.insert((*key).into(), json!(value));
                }
                for (key, value) in &labels {
                    document.insert(key.clone(), json!(value));
                }
                for (name, value) in metrics {
                    document.insert(name, value);
                }
                Value::Object(document).to_string()
            })
            .collect()
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.slot(key, || Slot::Counter(Arc::default())) {
            Slot::Counter(sum) => Counter::from_arc(sum),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.slot(key, || Slot::Gauge(Arc::default())) {
            Slot::Gauge(level) => Gauge::from_arc(level),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.slot(key, || Slot::Histogram(Arc::default())) {
            Slot::Histogram(values) => Histogram::from_arc(values),
            _ => Histogram::noop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_per_label_set_then_a_fresh_start() {
        let recorder = EmfRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(metric::CONNECTIONS_OPENED).increment(2);
            metrics::histogram!(metric::PUSH_LATENCY).record(12.5);
            metrics::histogram!(metric::PUSH_LATENCY).record(3.0);
            metrics::counter!(metric::PUSHES_FAILED, "kind" => "gone").increment(1);
            metrics::counter!(metric::PUSHES_FAILED, "kind" => "throttled").increment(3);
            metrics::counter!(metric::REQUESTS, "status" => "COMPLETED").increment(1);
        });
        let lines = recorder.flush(
            "Streamer",
            &[("Function", "processor")],
            &[
                ("RequestId", "8f5b2c1e-4d3a-4b2c-9e1f-0a1b2c3d4e5f"),
                ("TraceId", "Root=1-5759e988-bd862e3fe1be46a994272793"),
            ],
            1_795_770_000_000,
        );
        let documents: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.iter().all(|l| !l.contains('\n')), "one line each");
        insta::assert_json_snapshot!(documents);
        assert!(
            recorder.flush("Streamer", &[], &[], 0).is_empty(),
            "nothing recorded since"
        );
    }
}
