# The services allocate through jemalloc (Debian's libjemalloc2): memory a
# burst of sessions used goes back to the system within seconds of its end,
# where glibc's heap kept it (10,000 WebSocket sessions opened and closed:
# edge, broker and connector 41-49 MiB each afterwards, against 308-406 MiB).
# Not with the sanitizers (they bring their own allocator) or
# POSTERN_JEMALLOC=OFF; tune_malloc() then sets glibc's malloc up instead.
option(POSTERN_JEMALLOC "Link the services with jemalloc" ON)
set(POSTERN_USE_JEMALLOC OFF)
if(POSTERN_JEMALLOC AND NOT POSTERN_SANITIZE AND NOT POSTERN_FUZZ)
  find_library(POSTERN_JEMALLOC_LIBRARY NAMES jemalloc)
  if(NOT POSTERN_JEMALLOC_LIBRARY)
    message(FATAL_ERROR "jemalloc not found: apt-get install libjemalloc-dev (deploy/local/install-deps.sh), "
                        "or configure with -DPOSTERN_JEMALLOC=OFF")
  endif()
  set(POSTERN_USE_JEMALLOC ON)
endif()

# A service executable: jemalloc and its settings when in use.
function(postern_service_allocator target)
  if(POSTERN_USE_JEMALLOC)
    target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/services/common/alloc/jemalloc_conf.cpp)
    target_link_libraries(${target} PRIVATE ${POSTERN_JEMALLOC_LIBRARY})
  endif()
endfunction()
