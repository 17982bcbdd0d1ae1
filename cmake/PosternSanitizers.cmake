# POSTERN_SANITIZE=ON builds everything with ASan + UBSan.
# POSTERN_FUZZ=ON (Clang only) adds libFuzzer's coverage instrumentation to
# every target and builds the fuzz targets in tests/fuzz/.
if(POSTERN_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # Clang 14's -fsanitize=function cannot emit coroutine frames
    # ("Cannot represent a difference across sections"); it checks calls
    # through mistyped function pointers only.
    add_compile_options(-fno-sanitize=function)
  endif()
endif()
if(POSTERN_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "POSTERN_FUZZ=ON needs Clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++-14")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
