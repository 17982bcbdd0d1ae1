#pragma once

#include <cstdint>
#include <string>
#include <string_view>

/// Paths, scratch directories and file contents for tests.
///
/// Every function here throws std::runtime_error (with the path and errno text)
/// when the file system refuses; none of them is specific to one thread.
namespace postern::testing {

/// The built binary `name`: POSTERN_BINARY_DIR "/bin/" + name (the demo
/// service: POSTERN_DEMO_BINARY when the build was given one).
std::string binary_path(std::string_view name);

/// A file in the source tree: POSTERN_SOURCE_DIR "/" + relative.
std::string source_path(std::string_view relative);

/// A fresh directory under $TMPDIR (or /tmp), named `<prefix>-XXXXXX`.
///
/// The destructor removes it recursively, unless the environment has
/// POSTERN_KEEP_TEST_DIRS=1, in which case it is left for a post-mortem and its
/// path is printed to stderr. Move-only; a moved-from TempDir owns nothing.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "postern-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;

  /// The directory, without a trailing slash.
  const std::string& path() const { return path_; }
  /// path() + "/" + name. Does not create anything.
  std::string file(std::string_view name) const;

 private:
  void remove() noexcept;

  std::string path_;
};

/// Creates or truncates `path` and writes `content` to it.
void write_file(const std::string& path, std::string_view content);

/// The whole content of `path`.
std::string read_file(const std::string& path);

/// Writes `bytes` bytes to `path` where byte i is (i % 251), streaming (the
/// content is never held in memory whole, so multi-GiB files are fine).
/// Returns the SHA-256 of the content as lowercase hex.
std::string make_pattern_file(const std::string& path, std::uint64_t bytes);

/// SHA-256 of `data` as lowercase hex.
std::string sha256_hex(std::string_view data);

/// SHA-256 of the content of the file `path` as lowercase hex, streaming.
std::string sha256_file_hex(const std::string& path);

}  // namespace postern::testing
