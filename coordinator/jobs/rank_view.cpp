#include "coordinator/jobs/rank_view.h"

#include <algorithm>
#include <iterator>

namespace rx::coord {

using json = nlohmann::json;

json rank_entries(const json& ranks) {
  json out = json::array();
  if (!ranks.is_array()) return out;
  for (const auto& r : ranks) {
    if (!r.is_object()) continue;
    out.push_back({{"rank", r.value("rank", json(nullptr))},
                   {"host", r.value("host", json(nullptr))},
                   {"local_rank", r.value("local_rank", json(nullptr))},
                   {"images_per_sec", r.value("images_per_sec", json(nullptr))},
                   {"peak_memory_bytes", r.value("peak_memory_bytes", json(nullptr))}});
  }
  return out;
}

json node_entries(const json& entries) {
  json nodes = json::array();
  for (const auto& r : entries) {
    if (!r["host"].is_string()) continue;  // an older worker: no host, no per-node view
    auto it = std::find_if(nodes.begin(), nodes.end(), [&](const json& n) { return n["host"] == r["host"]; });
    if (it == nodes.end()) {
      nodes.push_back(
          {{"host", r["host"]}, {"ranks", json::array()}, {"images_per_sec", 0.0}, {"peak_memory_bytes", 0}});
      it = std::prev(nodes.end());
    }
    (*it)["ranks"].push_back(r["rank"]);
    if (r["images_per_sec"].is_number())
      (*it)["images_per_sec"] = (*it)["images_per_sec"].get<double>() + r["images_per_sec"].get<double>();
    if (r["peak_memory_bytes"].is_number_integer())
      (*it)["peak_memory_bytes"] =
          (*it)["peak_memory_bytes"].get<int64_t>() + r["peak_memory_bytes"].get<int64_t>();
  }
  return nodes;
}

}  // namespace rx::coord
