#include <cstdio>
#include <iostream>

#include "common/model/describe.h"
#include "common/util/error.h"
#include "worker/commands.h"

namespace rx::worker {

static int parse_positive(const std::string& text, const std::string& what) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || used == 0)
    throw UsageError(what + ": expected an integer, got \"" + text + "\"");
  return v;
}

int describe_command(const std::vector<std::string>& args) {
  Args cli(args, {"model", "input", "classes"}, {"json", "list", "help"});
  if (cli.has("help")) {
    std::cout << "usage: resnext_worker describe --model NAME [--input HxWxC] [--classes K] [--json]\n"
                 "       resnext_worker describe --list\n";
    return 0;
  }
  if (cli.has("list")) {
    for (const auto& n : model::preset_names()) std::cout << n << "\n";
    return 0;
  }
  if (!cli.has("model")) throw UsageError("describe: --model NAME is required (see --list)");
  auto spec = model::preset(cli.get_or("model", ""));
  int h = spec.stem == model::StemKind::kImageNet ? 224 : 32, w = h;
  if (cli.has("input")) {
    const std::string in = cli.get_or("input", "");
    const auto x1 = in.find('x'), x2 = in.find('x', x1 == std::string::npos ? 0 : x1 + 1);
    if (x1 == std::string::npos || x2 == std::string::npos)
      throw UsageError("--input: expected HxWxC (e.g. 32x32x3), got \"" + in + "\"");
    h = parse_positive(in.substr(0, x1), "--input height");
    w = parse_positive(in.substr(x1 + 1, x2 - x1 - 1), "--input width");
    spec.in_channels = parse_positive(in.substr(x2 + 1), "--input channels");
  }
  if (cli.has("classes")) spec.num_classes = parse_positive(cli.get_or("classes", ""), "--classes");
  auto report = model::describe(spec, h, w);
  if (cli.has("json"))
    std::cout << model::to_json(report).dump(2) << "\n";
  else
    std::cout << model::to_table(report);
  return 0;
}

}  // namespace rx::worker
