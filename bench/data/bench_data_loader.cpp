// Data loader throughput: images/s for crop + flip + normalise on CIFAR-sized (3x32x32) images.
// Not a test; see bench/README.md ("## Data loader").
//
//   bench_data_loader [--count N] [--batch B] [--threads T] [--epochs E] [--resize S] [--channels-last]
//                     [--data-dir DIR --format cifar10|cifar100|idx|synthetic] [--defer [--device-augment]]
//
// Without --data-dir it uses the in-memory synthetic stand-in (the pixel values do not affect speed).
// --defer: the loader threads only copy pixels and draw transforms (data.augment.on_device);
// --device-augment: the consuming thread then augments each batch with the DeviceAugmenter on the CPU.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "common/data/device_augment.h"
#include "common/data/loader.h"
#include "common/util/args.h"
#include "common/util/error.h"

using namespace rx::data;

int main(int argc, char** argv) try {
  const rx::Args a({argv + 1, argv + argc},
                   {"count", "batch", "threads", "epochs", "resize", "data-dir", "format"},
                   {"channels-last", "defer", "device-augment"});
  if (!a.positionals().empty()) throw rx::UsageError("unexpected argument '" + a.positionals()[0] + "'");
  const int64_t count = a.get_int64("count", 50000, 1, int64_t{1} << 32);
  const int64_t batch = a.get_int64("batch", 128, 1, 1 << 20);
  const int64_t epochs = a.get_int64("epochs", 3, 1, 1000);
  const int threads = a.get_int("threads", 1, 0, 256);  // 0: batches built on the calling thread
  const int resize = a.get_int("resize", 0, 0, 4096);
  const bool channels_last = a.has("channels-last");
  const bool defer = a.has("defer"), device_augment = a.has("device-augment");
  if (device_augment && !defer) throw rx::UsageError("--device-augment needs --defer");
  const std::string dir = a.get_or("data-dir", ""), format = a.get_or("format", "cifar10");
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
  opts.defer_augment = defer;
  double best = 0, total_s = 0;
  int64_t total_images = 0;
  double checksum = 0;
  for (int64_t e = 0; e < epochs; ++e) {
    opts.epoch = e;
    const auto t0 = std::chrono::steady_clock::now();
    Loader loader(data, indices, aug, opts);
    const DeviceAugmenter on_cpu(loader.augmenter(), torch::kCPU);
    int64_t n = 0;
    while (auto b = loader.next()) {
      n += b->labels.size(0);
      // Touch the output so nothing is optimised away.
      if (device_augment)
        checksum += on_cpu.images(*b, channels_last).data_ptr<float>()[0];
      else if (defer)
        checksum += b->pixels.data_ptr<uint8_t>()[0];
      else
        checksum += b->images.data_ptr<float>()[0];
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %lld: %lld images in %.3f s = %.0f images/s\n", static_cast<long long>(e),
                static_cast<long long>(n), s, n / s);
    best = std::max(best, n / s);
    total_s += s;
    total_images += n;
  }
  std::printf("data loader: %s %lldx%dx%dx%d, batch %lld, %d worker thread(s), crop+flip+normalise%s%s%s\n",
              dir.empty() ? "synthetic" : format.c_str(), static_cast<long long>(data.count), data.channels,
              data.height, data.width, static_cast<long long>(batch), threads,
              resize ? (" + resize " + std::to_string(resize)).c_str() : "",
              channels_last ? ", channels-last" : "",
              device_augment ? ", deferred, then augmented by the DeviceAugmenter on the CPU"
              : defer        ? ", deferred (pixels and transforms only)"
                             : "");
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
