# Compile time of the LibTorch half of the build, which is most of CI's time on 2 cores.
#
# [Torch PCH] Parsing LibTorch's headers is a large part of the compile time of every unit that includes them:
# about 15 of a 40-second compile on a CI core, and more for the CUDA LibTorch. About 70 units do.
# rx_common precompiles <torch/torch.h>, nlohmann_json and spdlog once per build folder; every other
# target that links rx_common or rx_worker_lib directly reuses that file (REUSE_FROM), so the headers
# are parsed once, not 70 times. Measured on a 2-core CI-class VM: the CPU build's compile time fell by
# a quarter, 2,391 to 1,804 CPU-seconds, 22 to 15 minutes. (The same for the coordinator's Beast and
# Asio headers saved 5% of that half, so it is not done: template instantiation, not parsing, is what
# those units spend their time on.)
#
# Reuse needs the flags the header was compiled with: the reusing targets take rx_common's PUBLIC
# definitions and options and rx_warnings, as rx_common does. GCC checks the rest itself: where a
# unit's flags differ it says so (-Winvalid-pch, which CMake adds) and parses the plain headers
# instead, so a mismatch costs time, never a wrong object. The two units with floating-point options
# of their own (augment.cpp, flat_kernels.cpp) skip it outright, so their numerics never depend on the
# precompiled file's. RX_PCH=OFF turns it off (e.g. for clang-tidy).
option(RX_PCH "precompile LibTorch's headers once per build ([Torch PCH])" ON)

# [Unity batches] rx_common and rx_worker_lib compile their units six to a file (CMake's unity build):
# LibTorch's templates are then instantiated, and the precompiled header loaded, once per batch, not
# once per unit. With the PCH, the two libraries fell from 657 to 267 CPU-seconds on the CI-class VM.
# Units with options of their own (augment.cpp, flat_kernels.cpp) stay alone (CMake leaves out sources
# with COMPILE_OPTIONS). Only these two targets: the torch-free ones (rx_core, the coordinator) have
# same-named helpers in anonymous namespaces of different files, and gain little. RX_UNITY=OFF: one
# object per unit again (quicker to rebuild one edited file).
option(RX_UNITY "compile rx_common and rx_worker_lib in batches ([Unity batches])" ON)

# [Tests at -O1] In Release builds the test binaries under tests/ compile at -O1, not -O3: a test
# spends its time in the libraries (which stay at -O3) and in LibTorch, not in its own code, while
# GCC spends a quarter of each test unit's compile on -O3's optimisation (test_reducer.cpp: 28.6 s
# at -O3, 21.0 s at -O1 on a CI-class core; about 40 such units). The precompiled header stays
# usable (GCC requires only that both sides optimise). Without -ffast-math GCC gives the same IEEE
# results at either level, so the bit-exact checks compare the same numbers. RX_TEST_O1=OFF: the
# build type's own level.
option(RX_TEST_O1 "compile the tests' own units at -O1 in Release builds ([Tests at -O1])" ON)

# Sets `out` to whether `file` includes LibTorch (<torch/...> or <ATen/...>), itself or through the
# project's own headers (read without the preprocessor, so a header behind an #if counts). Memoised in
# global properties; a file is marked FALSE while it is read, which ends include cycles.
function(_rx_includes_torch file out)
  get_property(known GLOBAL PROPERTY "rx_torch:${file}" SET)
  if(NOT known)
    set_property(GLOBAL PROPERTY "rx_torch:${file}" FALSE)
    set(found FALSE)
    get_filename_component(here ${file} DIRECTORY)
    file(STRINGS ${file} includes REGEX "^#include [<\"]")
    foreach(line ${includes})
      if(line MATCHES "^#include <(torch|ATen)/")
        set(found TRUE)
      elseif(line MATCHES "^#include \"([^\"]+)\"")
        foreach(header ${PROJECT_SOURCE_DIR}/${CMAKE_MATCH_1} ${here}/${CMAKE_MATCH_1})
          if(EXISTS ${header})
            _rx_includes_torch(${header} nested)
            if(nested)
              set(found TRUE)
            endif()
            break()
          endif()
        endforeach()
      endif()
      if(found)
        break()
      endif()
    endforeach()
    set_property(GLOBAL PROPERTY "rx_torch:${file}" ${found})
  endif()
  get_property(result GLOBAL PROPERTY "rx_torch:${file}")
  set(${out} ${result} PARENT_SCOPE)
endfunction()

# Loading the 0.6 GB file costs a unit 6-8 s, so the units of these targets that do not include
# LibTorch (a timer, the worker's main.cpp, a torch-free test) compile without it.
function(_rx_pch_skip_torch_free target)
  get_target_property(dir ${target} SOURCE_DIR)
  get_target_property(sources ${target} SOURCES)
  foreach(src ${sources})
    get_filename_component(path ${src} ABSOLUTE BASE_DIR ${dir})
    if(path MATCHES "\\.cpp$" AND EXISTS ${path})
      _rx_includes_torch(${path} torch)
      if(NOT torch)
        set_source_files_properties(${path} TARGET_DIRECTORY ${target} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
      endif()
    endif()
  endforeach()
endfunction()

# Sets `out` to every target defined in `dir` and below. rx_build_speed walks the tree once every
# target exists, so a new target needs no call of its own.
function(_rx_targets_below dir out)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub ${subdirs})
    _rx_targets_below(${sub} more)
    list(APPEND targets ${more})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

# Called at the end of the top-level CMakeLists.txt.
function(rx_build_speed)
  _rx_targets_below(${PROJECT_SOURCE_DIR} all)
  if(RX_TEST_O1)  # [Tests at -O1]: the executables defined in the tests/ tree
    foreach(t ${all})
      get_target_property(type ${t} TYPE)
      get_target_property(dir ${t} SOURCE_DIR)
      string(FIND "${dir}/" "${PROJECT_SOURCE_DIR}/tests/" at)
      if(type STREQUAL "EXECUTABLE" AND at EQUAL 0)
        target_compile_options(${t} PRIVATE $<$<CONFIG:Release>:-O1>)
      endif()
    endforeach()
  endif()
  if(RX_UNITY)
    set_target_properties(rx_common rx_worker_lib PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 6)
  endif()
  if(NOT RX_PCH)
    return()
  endif()
  target_precompile_headers(rx_common PRIVATE <torch/torch.h> <nlohmann/json.hpp> <spdlog/spdlog.h>)
  _rx_pch_skip_torch_free(rx_common)
  set_source_files_properties(${PROJECT_SOURCE_DIR}/common/data/augment.cpp
                              ${PROJECT_SOURCE_DIR}/common/optim/flat_kernels.cpp
                              TARGET_DIRECTORY rx_common PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  # Every other target that links rx_common or rx_worker_lib directly reuses rx_common's header.
  foreach(t ${all})
    get_target_property(type ${t} TYPE)
    get_target_property(libs ${t} LINK_LIBRARIES)
    if(NOT t STREQUAL rx_common AND type MATCHES "^(EXECUTABLE|STATIC_LIBRARY)$" AND libs
       AND ("rx_common" IN_LIST libs OR "rx_worker_lib" IN_LIST libs))
      target_precompile_headers(${t} REUSE_FROM rx_common)
      _rx_pch_skip_torch_free(${t})
    endif()
  endforeach()
endfunction()
