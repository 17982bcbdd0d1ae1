#include "common/file_watch.hpp"

#include <sys/stat.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

namespace postern {

FileStamp stamp_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
          static_cast<std::int64_t>(st.st_size), static_cast<std::uint64_t>(st.st_ino)};
}

asio::awaitable<void> watch_files(std::vector<std::string> paths, std::chrono::steady_clock::duration interval,
                                  std::function<bool()> on_change, const bool* stop) {
  std::erase_if(paths, [](const std::string& p) { return p.empty(); });
  if (paths.empty()) co_return;
  std::vector<FileStamp> seen;
  for (const auto& p : paths) seen.push_back(stamp_file(p));
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(interval);
    co_await timer.async_wait(use_nothrow);
    if (stop && *stop) co_return;
    bool changed = false;
    for (std::size_t i = 0; i < paths.size(); ++i) {
      const FileStamp now = stamp_file(paths[i]);
      if (now != seen[i]) {
        seen[i] = now;
        changed = true;
      }
    }
    if (changed && !on_change()) co_return;
  }
}

}  // namespace postern
