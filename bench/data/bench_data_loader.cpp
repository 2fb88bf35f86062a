// Data loader throughput: images/s for crop + flip + normalise on CIFAR-sized (3x32x32) images.
// Not a test; see bench/README.md ("## Data loader").
//
//   bench_data_loader [--count N] [--batch B] [--threads T] [--epochs E] [--resize S] [--channels-last]
//                     [--data-dir DIR --format cifar10|cifar100|idx|synthetic]
//
// Without --data-dir it uses the in-memory synthetic stand-in (the pixel values do not affect speed).
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/data/loader.h"
#include "common/util/error.h"

using namespace rx::data;

int main(int argc, char** argv) try {
  int64_t count = 50000, batch = 128, epochs = 3;
  int threads = 1, resize = 0;
  bool channels_last = false;
  std::string dir, format = "cifar10";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw rx::UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--count")
      count = std::stoll(value());
    else if (a == "--batch")
      batch = std::stoll(value());
    else if (a == "--threads")
      threads = std::stoi(value());
    else if (a == "--epochs")
      epochs = std::stoll(value());
    else if (a == "--resize")
      resize = std::stoi(value());
    else if (a == "--channels-last")
      channels_last = true;
    else if (a == "--data-dir")
      dir = value();
    else if (a == "--format")
      format = value();
    else
      throw rx::UsageError("unknown flag " + a);
  }
  torch::set_num_threads(1);
  const Dataset data = dir.empty() ? make_synthetic_cifar10(count, 1, Split::kTrain)
                                   : load_dataset(format, dir, Split::kTrain).take_first(count);
  std::vector<int64_t> indices(static_cast<size_t>(data.count));
  for (int64_t i = 0; i < data.count; ++i) indices[i] = (i * 7919) % data.count;  // scattered reads
  AugmentOptions aug;  // crop 4 + flip + CIFAR normalisation
  aug.resize = resize;
  if (data.channels == 1 && data.height <= 32) {
    aug.pad_to = 32;
    aug.replicate_channels = 3;
  }
  LoaderOptions opts;
  opts.batch_size = batch;
  opts.num_threads = threads;
  opts.channels_last = channels_last;
  double best = 0, total_s = 0;
  int64_t total_images = 0;
  double checksum = 0;
  for (int64_t e = 0; e < epochs; ++e) {
    opts.epoch = e;
    const auto t0 = std::chrono::steady_clock::now();
    Loader loader(data, indices, aug, opts);
    int64_t n = 0;
    while (auto b = loader.next()) {
      n += b->images.size(0);
      checksum += b->images.data_ptr<float>()[0];  // touch the output so nothing is optimised away
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %lld: %lld images in %.3f s = %.0f images/s\n", static_cast<long long>(e),
                static_cast<long long>(n), s, n / s);
    best = std::max(best, n / s);
    total_s += s;
    total_images += n;
  }
  std::printf("data loader: %s %lldx%dx%dx%d, batch %lld, %d worker thread(s), crop+flip+normalise%s%s\n",
              dir.empty() ? "synthetic" : format.c_str(), static_cast<long long>(data.count), data.channels,
              data.height, data.width, static_cast<long long>(batch), threads,
              resize ? (" + resize " + std::to_string(resize)).c_str() : "",
              channels_last ? ", channels-last" : "");
  std::printf("mean %.0f images/s, best epoch %.0f images/s (checksum %.3f)\n", total_images / total_s, best,
              checksum);
  return 0;
} catch (const rx::UsageError& e) {
  std::fprintf(stderr, "usage error: %s\n", e.what());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
