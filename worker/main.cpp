#include <torch/torch.h>
#include <cstdio>
int main() {
  auto t = torch::ones({2, 2});
  std::printf("%f\n", t.sum().item<float>());
  return 0;
}
