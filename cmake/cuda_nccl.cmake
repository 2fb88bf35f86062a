# [CUDA gate] Everything that needs a CUDA LibTorch sits behind RX_WITH_CUDA, defined only when the
# LibTorch we found was built with CUDA *and* NCCL is available. The CPU build never sees that code.
set(RX_WITH_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR CUDA_FOUND OR TARGET torch_cuda)
  # NCCL_HOME first (e.g. the nvidia-nccl wheel beside a Python torch, which ships only libnccl.so.2).
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS $ENV{NCCL_HOME}/include /usr/local/cuda/include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS $ENV{NCCL_HOME}/lib /usr/local/cuda/lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(RX_WITH_CUDA ON)
    add_library(rx_nccl INTERFACE)
    target_include_directories(rx_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(rx_nccl INTERFACE ${NCCL_LIBRARY})
  endif()
endif()
message(STATUS "resnext: CUDA/NCCL path ${RX_WITH_CUDA}")
option(RX_REQUIRE_CUDA "fail configuration unless the CUDA/NCCL path is on (launch/build_cuda.sh)" OFF)
if(RX_REQUIRE_CUDA AND NOT RX_WITH_CUDA)
  message(FATAL_ERROR "RX_REQUIRE_CUDA: the LibTorch found (${TORCH_INSTALL_PREFIX}) has no CUDA, or NCCL was not found "
                      "(set NCCL_HOME or CUDA_HOME)")
endif()
