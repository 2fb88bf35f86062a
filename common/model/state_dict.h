#pragma once
// Loading weights saved from Python with torch.save(model.state_dict(), path), matched by name.
#include <torch/nn.h>

#include <string>
#include <utility>
#include <vector>

namespace rx::model {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Reads a torch.save'd dict of tensors (PyTorch's zip format). IoError if unreadable, DataError if it is
// not a dict of string -> tensor.
NamedTensors read_state_dict(const std::string& path);

// Writes `model`'s parameters and buffers in the same format (torch.load in Python reads it).
void save_state_dict(const torch::nn::Module& model, const std::string& path);

struct LoadOptions {
  // Skip the classifier ("fc.*"): bring pretrained features, keep the freshly initialised head
  // (fine-tuning with another number of classes).
  bool skip_head = false;
};

// Copies every tensor into the model's parameter or buffer of the same name. All problems are
// collected first and reported together in one DataError naming `source`: missing keys, unexpected
// keys and mis-shaped tensors (with both shapes). Nothing is copied unless everything matches.
void load_state_dict(torch::nn::Module& model, const NamedTensors& tensors, const LoadOptions& options,
                     const std::string& source);

}  // namespace rx::model
