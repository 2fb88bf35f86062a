#pragma once
// [Run plots] The run record's curves as one self-contained SVG (plain text, no library): train loss
// and test accuracy per epoch, learning rate, and images/s per rank, written beside result.json so a
// run on a cluster without the coordinator has its pictures too.
#include <nlohmann/json.hpp>
#include <string>

namespace rx::worker {

std::string run_plots_svg(const nlohmann::json& record);
// Writes <dir>/plots.svg atomically.
void write_run_plots(const std::string& dir, const nlohmann::json& record);

}  // namespace rx::worker
