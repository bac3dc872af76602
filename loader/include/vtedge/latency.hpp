// Latency statistics, computed exactly as the Python pipeline does
// (pipeline/metrics.py: latency_metrics): percentiles with numpy's default
// np.percentile (method "linear"), mean with numpy's pairwise summation.
#pragma once

#include <vector>

namespace vtedge {

struct LatencyStats {
    int runs = 0;
    int batch = 1;
    double p50_ms = 0.0;
    double p90_ms = 0.0;
    double p99_ms = 0.0;
    double mean_ms = 0.0;
    double min_ms = 0.0;
    double max_ms = 0.0;
    double throughput_ips = 0.0;  // images per second: batch * 1000 / mean_ms
};

// np.percentile(samples, q) with the default method "linear" (Hyndman & Fan type 7): over the
// sorted samples, index (n - 1) * (q / 100), interpolated between its neighbours with numpy's
// _lerp (b - (b - a) * (1 - t) when t >= 0.5, else a + (b - a) * t). Throws vtedge::Error
// when `samples` is empty or q is outside [0, 100]. NaN samples sort last, so a NaN sample
// gives NaN, as in numpy.
double percentile(std::vector<double> samples, double q);

// np.mean(samples): numpy's pairwise sum divided by the count.
double mean(const std::vector<double>& samples);

// p50 / p90 / p99 / mean / min / max of per-run latencies in milliseconds, and the
// throughput for `batch` images per run. Throws vtedge::Error when `samples_ms` is empty.
LatencyStats latency_stats(const std::vector<double>& samples_ms, int batch = 1);

}  // namespace vtedge
