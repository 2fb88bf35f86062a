# RX_PYTHONPATH: the folder of the Python tests' shared helper modules (rxtest, coordlib, cdp,
# slurm_cluster); every Python test sets PYTHONPATH=${RX_PYTHONPATH} in its ENVIRONMENT. Set here, where the
# whole project sees it, because tests/contract (and tests/gpu in an RX_WORKER_ONLY build) are added from
# the top-level CMakeLists.txt, outside tests/CMakeLists.txt's scope.
set(RX_PYTHONPATH ${PROJECT_SOURCE_DIR}/tests/python)

# rx_add_test(NAME name SOURCES a.cpp ... [LIBS ...] [LABELS ...] [TIMEOUT s])
#   One GoogleTest binary registered as one CTest test.
# rx_add_mpi_test(NAME name TARGET exe NP n [ARGS ...] [TIMEOUT s])
#   Runs an existing executable under mpiexec -np n (as root and oversubscribed where needed).
function(rx_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE GTest::gtest GTest::gtest_main rx_warnings ${T_LIBS})
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
    ENVIRONMENT "RX_SOURCE_DIR=${PROJECT_SOURCE_DIR};RX_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()

set(RX_MPIEXEC_FLAGS --allow-run-as-root --oversubscribe --bind-to none)
function(rx_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;TARGET;NP;TIMEOUT" "ARGS;LABELS" ${ARGN})
  add_test(NAME ${T_NAME}
    COMMAND ${MPIEXEC_EXECUTABLE} ${RX_MPIEXEC_FLAGS} ${MPIEXEC_NUMPROC_FLAG} ${T_NP}
            $<TARGET_FILE:${T_TARGET}> ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "mpi;${T_LABELS}"
    ENVIRONMENT "RX_SOURCE_DIR=${PROJECT_SOURCE_DIR};RX_BINARY_DIR=${PROJECT_BINARY_DIR};OMPI_MCA_rmaps_base_oversubscribe=1")
endfunction()

# rx_add_gpu_test(NAME name COMMAND cmd ... [TIMEOUT s])
#   A GPU test (label gpu). It is built and registered in every build; where no GPU is visible, where
#   there are fewer GPUs than it needs, or in a CPU build it prints "SKIPPED: no CUDA ..." with the
#   reason, which CTest reports as a skip. launch/gpu_check.sh runs the same tests on a GPU machine.
function(rx_add_gpu_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND" ${ARGN})
  add_test(NAME ${T_NAME} COMMAND ${T_COMMAND})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS gpu SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA"
    ENVIRONMENT "RX_SOURCE_DIR=${PROJECT_SOURCE_DIR};RX_BINARY_DIR=${PROJECT_BINARY_DIR};OMPI_MCA_rmaps_base_oversubscribe=1")
endfunction()
