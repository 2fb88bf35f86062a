# [CUDA gate] Everything that needs a CUDA LibTorch sits behind RX_WITH_CUDA, defined only when the
# LibTorch we found was built with CUDA *and* NCCL is available. The CPU build never sees that code.
set(RX_WITH_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR CUDA_FOUND OR TARGET torch_cuda)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include $ENV{NCCL_HOME}/include)
  find_library(NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 $ENV{NCCL_HOME}/lib)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(RX_WITH_CUDA ON)
    add_library(rx_nccl INTERFACE)
    target_include_directories(rx_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(rx_nccl INTERFACE ${NCCL_LIBRARY})
  endif()
endif()
message(STATUS "resnext: CUDA/NCCL path ${RX_WITH_CUDA}")
