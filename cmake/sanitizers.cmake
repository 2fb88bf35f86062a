# [Sanitizer builds] Two options for the instrumented builds that launch/run_fuzz.sh makes in build-fuzz:
#   RX_SANITIZE  comma-separated sanitizers for every target of the tree, e.g. "address,undefined".
#                Directory-scoped on purpose: ASan's container and heap checks are only sound when every
#                object file (our static libraries included) is instrumented, so it cannot be a per-target
#                opt-in. UBSan reports are made fatal (-fno-sanitize-recover), so a test cannot pass over one.
#   RX_FUZZ      libFuzzer targets in fuzz/ (needs Clang). Every object file also gets the coverage
#                instrumentation (-fsanitize=fuzzer-no-link); only the fuzz_* executables link libFuzzer.
# Without either option nothing changes. The fuzz/ folder is added in every build: its corpus replay
# tests (fuzz_replay_*) run the same entry points over the checked-in corpus in the normal suite.
set(RX_SANITIZE "" CACHE STRING "sanitizers for every target, e.g. address,undefined (empty: none)")
option(RX_FUZZ "build the libFuzzer targets in fuzz/ (Clang only)" OFF)

set(_rx_san_flags "")
if(RX_SANITIZE)
  string(REPLACE ";" "," _rx_san "${RX_SANITIZE}")
  list(APPEND _rx_san_flags -fsanitize=${_rx_san} -fno-omit-frame-pointer)
  if(_rx_san MATCHES "undefined")
    list(APPEND _rx_san_flags -fno-sanitize-recover=undefined)
  endif()
endif()
if(RX_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "RX_FUZZ=ON needs Clang (libFuzzer), e.g. -DCMAKE_CXX_COMPILER=clang++ "
                        "-DCMAKE_C_COMPILER=clang; this build uses ${CMAKE_CXX_COMPILER_ID}")
  endif()
  list(APPEND _rx_san_flags -fsanitize=fuzzer-no-link)
endif()
if(_rx_san_flags)
  message(STATUS "rx: sanitizer flags for every target: ${_rx_san_flags}")
  add_compile_options(${_rx_san_flags})
  add_link_options(${_rx_san_flags})
endif()
