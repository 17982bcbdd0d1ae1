#pragma once
// Noticing that files changed on disk: certificates cert-manager renews,
// keys rotated through a Secret, a ConfigMap's policy file. Polls stat()
// (which follows symlinks, as a mounted Secret's "..data" swap needs), so it
// works the same on every file system and in every container.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/asio.hpp"

namespace postern {

/// What stat() says of a file: a change in any of these is a change.
struct FileStamp {
  std::int64_t mtime_ns = 0;
  std::int64_t size = -1;  ///< -1: missing or unreadable
  std::uint64_t inode = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_file(const std::string& path);

/// Calls `on_change()` on the coroutine's executor each time any of `paths`
/// changes (checked every `interval`), until `*stop` is true or `on_change`
/// returns false. Empty paths are ignored. A file that changes again while
/// it is being written is reported again on the next check, so a reader
/// that failed on a half-written file gets a second chance.
asio::awaitable<void> watch_files(std::vector<std::string> paths, std::chrono::steady_clock::duration interval,
                                  std::function<bool()> on_change, const bool* stop = nullptr);

}  // namespace postern
