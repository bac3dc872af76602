#include "vtedge/topk.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace vtedge {

std::vector<float> softmax(const std::vector<float>& logits) {
    std::vector<float> out(logits.size());
    if (logits.empty()) return out;
    const float max = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - max);
    for (std::size_t i = 0; i < logits.size(); ++i) {
        out[i] = static_cast<float>(std::exp(static_cast<double>(logits[i]) - max) / sum);
    }
    return out;
}

std::vector<Prediction> top_k(const std::vector<float>& logits,
                              const std::vector<std::string>& labels, int k) {
    std::vector<int> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    // Ordering by logit (not by the rounded probability) keeps distinct logits distinct;
    // stable_sort keeps ties in index order.
    // NaN sorts last so the comparison stays a strict weak ordering.
    auto key = [&](int i) { return std::isnan(logits[i]) ? -INFINITY : logits[i]; };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) > key(b); });
    const std::vector<float> probs = softmax(logits);
    const std::size_t n = std::min(order.size(), static_cast<std::size_t>(std::max(k, 0)));
    std::vector<Prediction> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const int idx = order[i];
        Prediction p;
        p.index = idx;
        p.label = static_cast<std::size_t>(idx) < labels.size() ? labels[idx]
                                                               : "class " + std::to_string(idx);
        p.score = probs[idx];
        p.logit = logits[idx];
        out.push_back(std::move(p));
    }
    return out;
}

}  // namespace vtedge
