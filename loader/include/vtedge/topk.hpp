// Softmax and top-k over one row of logits.
#pragma once

#include <string>
#include <vector>

namespace vtedge {

struct Prediction {
    int index = 0;
    std::string label;
    float score = 0.0f;  // softmax probability
    float logit = 0.0f;
};

// Numerically stable softmax (max subtracted, accumulated in double).
std::vector<float> softmax(const std::vector<float>& logits);

// The k best classes, highest logit first; equal logits keep the lower index first.
// `labels` may be empty or shorter than the logits: missing names become "class <i>".
std::vector<Prediction> top_k(const std::vector<float>& logits,
                              const std::vector<std::string>& labels, int k);

}  // namespace vtedge
