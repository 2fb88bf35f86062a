# Warnings for project code only (third-party headers are included as SYSTEM by imported targets).
add_library(rx_warnings INTERFACE)
target_compile_options(rx_warnings INTERFACE -Wall -Wextra)
