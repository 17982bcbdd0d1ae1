// jemalloc's settings, read once as it starts (linked into the service
// executables only: cmake/PosternMalloc.cmake). One background thread returns
// freed memory to the system on jemalloc's decay schedule (dirty pages
// within 10 s), also while the service is idle; without it jemalloc purges
// only as the service allocates.
extern "C" {
// NOLINTNEXTLINE: the name and type are jemalloc's interface.
const char* malloc_conf = "background_thread:true,max_background_threads:1";
}
