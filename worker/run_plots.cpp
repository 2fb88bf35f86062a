#include "worker/run_plots.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <vector>

#include "common/util/file_util.h"

namespace rx::worker {

using nlohmann::json;

namespace {

constexpr int kPanelW = 440, kPanelH = 260, kPad = 48;
const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"};

struct Point {
  double x, y;
};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

// Value range with a little headroom; a flat or empty series still gets a non-zero span.
std::pair<double, double> range(const std::vector<double>& v, bool from_zero) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double x : v) lo = std::min(lo, x), hi = std::max(hi, x);
  if (v.empty()) lo = 0, hi = 1;
  if (from_zero) lo = std::min(0.0, lo);
  if (hi - lo < 1e-12) hi = lo + (lo == 0 ? 1 : std::abs(lo) * 0.1);
  return {lo, hi + (hi - lo) * 0.05};
}

// One panel at (ox, oy): frame, title, y-axis min/max labels and the x-axis label.
void frame(std::ostringstream& o, int ox, int oy, const std::string& title, const std::string& xlabel,
           std::pair<double, double> y) {
  o << "<g transform=\"translate(" << ox << "," << oy << ")\">\n"
    << "<text x=\"" << kPanelW / 2 << "\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">" << esc(title)
    << "</text>\n"
    << "<rect x=\"" << kPad << "\" y=\"24\" width=\"" << kPanelW - kPad - 10 << "\" height=\"" << kPanelH - 64
    << "\" fill=\"none\" stroke=\"#999\"/>\n"
    << "<text x=\"" << kPad - 4 << "\" y=\"32\" text-anchor=\"end\">" << num(y.second) << "</text>\n"
    << "<text x=\"" << kPad - 4 << "\" y=\"" << kPanelH - 40 << "\" text-anchor=\"end\">" << num(y.first)
    << "</text>\n"
    << "<text x=\"" << kPanelW / 2 << "\" y=\"" << kPanelH - 8 << "\" text-anchor=\"middle\">" << esc(xlabel)
    << "</text>\n";
}

// Line panels: each series drawn over x in [x0, x1] with dots at the points.
void lines(std::ostringstream& o, int ox, int oy, const std::string& title,
           const std::vector<std::pair<std::string, std::vector<Point>>>& series, bool from_zero) {
  std::vector<double> ys, xs;
  for (const auto& [name, pts] : series)
    for (const auto& p : pts) ys.push_back(p.y), xs.push_back(p.x);
  const auto y = range(ys, from_zero);
  double x0 = xs.empty() ? 0 : *std::min_element(xs.begin(), xs.end());
  double x1 = xs.empty() ? 1 : *std::max_element(xs.begin(), xs.end());
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  frame(o, ox, oy, title, "epoch " + num(x0) + " .. " + num(x1), y);
  const double w = kPanelW - kPad - 10, h = kPanelH - 64;
  auto px = [&](double x) { return kPad + (x - x0) / (x1 - x0) * w; };
  auto py = [&](double v) { return 24 + h - (v - y.first) / (y.second - y.first) * h; };
  int k = 0;
  for (const auto& [name, pts] : series) {
    const char* c = kColors[k % 4];
    o << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"2\" points=\"";
    for (const auto& p : pts) o << num(px(p.x)) << "," << num(py(p.y)) << " ";
    o << "\"/>\n";
    for (const auto& p : pts)
      o << "<circle cx=\"" << num(px(p.x)) << "\" cy=\"" << num(py(p.y)) << "\" r=\"3\" fill=\"" << c
        << "\"/>\n";
    o << "<text x=\"" << kPad + 8 << "\" y=\"" << 42 + 14 * k << "\" fill=\"" << c << "\">" << esc(name)
      << "</text>\n";
    ++k;
  }
  o << "</g>\n";
}

void bars(std::ostringstream& o, int ox, int oy, const std::string& title,
          const std::vector<std::string>& labels, const std::vector<double>& values) {
  const auto y = range(values, true);
  frame(o, ox, oy, title, "rank", y);
  const double w = kPanelW - kPad - 10, h = kPanelH - 64;
  const double slot = values.empty() ? w : w / static_cast<double>(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double bh = (values[i] - y.first) / (y.second - y.first) * h;
    o << "<rect x=\"" << num(kPad + slot * i + slot * 0.15) << "\" y=\"" << num(24 + h - bh) << "\" width=\""
      << num(slot * 0.7) << "\" height=\"" << num(bh) << "\" fill=\"" << kColors[0] << "\"/>\n"
      << "<text x=\"" << num(kPad + slot * (i + 0.5)) << "\" y=\"" << kPanelH - 26
      << "\" text-anchor=\"middle\">" << esc(labels[i]) << "</text>\n";
  }
  o << "</g>\n";
}

std::vector<Point> series(const json& epochs, const char* key) {
  std::vector<Point> out;
  for (const auto& e : epochs)
    if (e.contains(key) && e[key].is_number() && e.contains("epoch"))
      out.push_back({e["epoch"].get<double>(), e[key].get<double>()});
  return out;
}

}  // namespace

// The preset's name, or for a model given by depth/cardinality/base_width (preset null) the name a
// preset of that shape would have.
static std::string model_title(const json& record) {
  if (!record.contains("model") || !record["model"].is_object()) return "";
  const json& m = record["model"];
  if (m.contains("preset") && m["preset"].is_string()) return m["preset"].get<std::string>();
  const auto field = [&m](const char* key) {
    return m.contains(key) && m[key].is_number_integer() ? std::to_string(m[key].get<int64_t>()) : "?";
  };
  return "resnext" + field("depth") + "_" + field("cardinality") + "x" + field("base_width") + "d";
}

std::string run_plots_svg(const json& record) {
  const json epochs = record.value("epochs", json::array());
  std::vector<std::string> labels;
  std::vector<double> ips;
  for (const auto& r : record.value("ranks", json::array())) {
    labels.push_back(std::to_string(r.value("rank", 0)));
    ips.push_back(r.value("images_per_sec", 0.0));
  }
  std::ostringstream o;
  const int width = 2 * kPanelW + 20, height = 2 * kPanelH + 40;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  const std::string model = model_title(record);
  o << "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" << esc(model) << " on "
    << record.value("world_size", 0) << " rank(s): final test accuracy "
    << num(record.value("final_test_accuracy", 0.0)) << ", " << num(record.value("total_images_per_sec", 0.0))
    << " images/s</text>\n";
  lines(o, 0, 30, "Train loss per epoch", {{"train loss", series(epochs, "train_loss")}}, false);
  lines(o, kPanelW + 20, 30, "Accuracy per epoch",
        {{"test accuracy", series(epochs, "test_accuracy")},
         {"train accuracy", series(epochs, "train_accuracy")}},
        false);
  lines(o, 0, 30 + kPanelH, "Learning rate (end of epoch)", {{"lr", series(epochs, "lr")}}, true);
  bars(o, kPanelW + 20, 30 + kPanelH, "Images/s per rank", labels, ips);
  o << "</svg>\n";
  return o.str();
}

void write_run_plots(const std::string& dir, const json& record) {
  write_file_atomic(dir + "/plots.svg", run_plots_svg(record));
}

}  // namespace rx::worker
