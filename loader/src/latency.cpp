#include "vtedge/latency.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

#include "vtedge/error.hpp"

namespace vtedge {
namespace {

// numpy's pairwise summation of float64 (numpy/_core/src/umath/loops_utils.h.src,
// DOUBLE_pairwise_sum): below 8 values a plain loop, up to 128 values eight interleaved
// accumulators, above that the two halves (split at a multiple of 8) summed recursively.
double pairwise_sum(const double* a, std::size_t n) {
    if (n < 8) {
        double res = -0.0;
        for (std::size_t i = 0; i < n; ++i) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = a[j];
        std::size_t i = 8;
        for (; i < n - (n % 8); i += 8) {
            for (int j = 0; j < 8; ++j) r[j] += a[i + j];
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    std::size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// numpy's _lerp: exact at both ends, and symmetric around t = 0.5.
double lerp(double a, double b, double t) {
    const double diff = b - a;
    return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

// NaN last, like numpy's sort.
bool nan_last_less(double x, double y) {
    if (std::isnan(x)) return false;
    if (std::isnan(y)) return true;
    return x < y;
}

double sorted_percentile(const std::vector<double>& sorted, double q) {
    const std::size_t n = sorted.size();
    const double quantile = q / 100.0;                       // np.true_divide(q, 100)
    const double virtual_index = static_cast<double>(n - 1) * quantile;  // (n - 1) * quantiles
    double previous = std::floor(virtual_index);
    std::size_t lo = 0;
    std::size_t hi = 0;
    if (virtual_index >= static_cast<double>(n - 1)) {
        // numpy sets both neighbours to -1 (the last value); gamma becomes index + 1, which
        // does not matter when both ends are the same finite value.
        lo = hi = n - 1;
        previous = -1.0;
    } else if (virtual_index < 0.0) {
        lo = hi = 0;
        previous = 0.0;
    } else {
        lo = static_cast<std::size_t>(previous);
        hi = lo + 1;
    }
    const double gamma = virtual_index - previous;
    return lerp(sorted[lo], sorted[hi], gamma);
}

}  // namespace

double percentile(std::vector<double> samples, double q) {
    if (samples.empty()) throw Error("percentile of no samples");
    if (!(q >= 0.0 && q <= 100.0)) throw Error("percentile " + std::to_string(q) + " is outside [0, 100]");
    std::sort(samples.begin(), samples.end(), nan_last_less);
    if (std::isnan(samples.back())) return samples.back();
    return sorted_percentile(samples, q);
}

double mean(const std::vector<double>& samples) {
    if (samples.empty()) throw Error("mean of no samples");
    // np.add.reduce starts from the identity 0.0 and adds the pairwise sum of all values.
    return (0.0 + pairwise_sum(samples.data(), samples.size())) / static_cast<double>(samples.size());
}

LatencyStats latency_stats(const std::vector<double>& samples_ms, int batch) {
    if (samples_ms.empty()) throw Error("latency statistics of no samples");
    std::vector<double> sorted = samples_ms;
    std::sort(sorted.begin(), sorted.end(), nan_last_less);
    LatencyStats s;
    s.runs = static_cast<int>(sorted.size());
    s.batch = batch;
    const bool nan = std::isnan(sorted.back());
    s.p50_ms = nan ? sorted.back() : sorted_percentile(sorted, 50);
    s.p90_ms = nan ? sorted.back() : sorted_percentile(sorted, 90);
    s.p99_ms = nan ? sorted.back() : sorted_percentile(sorted, 99);
    s.mean_ms = mean(samples_ms);
    s.min_ms = sorted.front();
    s.max_ms = sorted.back();
    s.throughput_ips = batch * 1000.0 / s.mean_ms;
    return s;
}

}  // namespace vtedge
