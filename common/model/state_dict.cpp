#include "common/model/state_dict.h"

#include <torch/serialize.h>

#include <fstream>
#include <map>
#include <sstream>

#include "common/util/error.h"

namespace rx::model {

void save_state_dict(const torch::nn::Module& model, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& p : model.named_parameters()) dict.insert(p.key(), p.value().detach().cpu());
  for (const auto& b : model.named_buffers()) dict.insert(b.key(), b.value().detach().cpu());
  auto bytes = torch::pickle_save(dict);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(tmp, "cannot create file");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw IoError(tmp, "write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw IoError(path, "cannot rename from " + tmp);
}

static std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void load_state_dict(torch::nn::Module& model, const NamedTensors& tensors, const LoadOptions& options,
                     const std::string& source) {
  auto is_head = [&](const std::string& k) { return options.skip_head && k.rfind("fc.", 0) == 0; };
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : model.named_parameters()) targets.emplace(p.key(), p.value());
  for (const auto& b : model.named_buffers()) targets.emplace(b.key(), b.value());

  std::vector<std::string> unexpected, misshaped;
  std::map<std::string, const torch::Tensor*> found;
  for (const auto& [key, value] : tensors) {
    if (is_head(key)) continue;
    auto it = targets.find(key);
    if (it == targets.end()) {
      unexpected.push_back(key);
    } else if (!it->second.sizes().equals(value.sizes())) {
      misshaped.push_back(key + " (file " + shape_str(value) + ", model " + shape_str(it->second) + ")");
    } else {
      found[key] = &value;
    }
  }
  std::vector<std::string> missing;
  for (const auto& target : targets) {
    const std::string& key = target.first;  // C++17 lambdas cannot capture structured bindings (clang)
    if (!is_head(key) && !found.count(key) &&
        std::none_of(misshaped.begin(), misshaped.end(),
                     [&](const std::string& m) { return m.rfind(key + " ", 0) == 0; }))
      missing.push_back(key);
  }

  if (!unexpected.empty() || !misshaped.empty() || !missing.empty()) {
    std::ostringstream os;
    os << "state_dict does not match the model";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      os << "; " << what << " (" << keys.size() << "): ";
      for (size_t i = 0; i < keys.size() && i < 20; ++i) os << (i ? ", " : "") << keys[i];
      if (keys.size() > 20) os << ", ...";
    };
    list("mis-shaped", misshaped);
    list("missing", missing);
    list("unexpected", unexpected);
    throw DataError(source, os.str());
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, value] : found) {
    auto& target = targets.at(key);
    target.copy_(value->to(target.dtype()));
  }
}

}  // namespace rx::model
