#include "common/policy/codec.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <stdexcept>

#include "common/utf8.hpp"

namespace postern::policy {
namespace {

// zlib counts in uInt; larger inputs are fed in pieces of at most this.
constexpr std::size_t kZlibPiece = 1u << 30;
constexpr std::size_t kOutChunk = 64 * 1024;

std::string zlib_error(const char* what, int rc, const z_stream& zs) {
  std::string s = "gzip: ";
  s += what;
  s += ": ";
  s += zs.msg ? zs.msg : zError(rc);
  return s;
}

// Hands zlib the next piece of `data` once it has used up the previous one.
void feed(z_stream& zs, std::string_view& rest) {
  if (zs.avail_in != 0 || rest.empty()) return;
  const std::size_t n = std::min(rest.size(), kZlibPiece);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(rest.data()));
  zs.avail_in = static_cast<uInt>(n);
  rest.remove_prefix(n);
}

struct DeflateGuard {
  z_stream* zs;
  ~DeflateGuard() { deflateEnd(zs); }
};
struct InflateGuard {
  z_stream* zs;
  ~InflateGuard() { inflateEnd(zs); }
};

constexpr std::string_view kBase64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<signed char, 256> make_base64_table() {
  std::array<signed char, 256> t{};
  for (auto& v : t) v = -1;
  for (std::size_t i = 0; i < kBase64Alphabet.size(); ++i) {
    t[static_cast<unsigned char>(kBase64Alphabet[i])] = static_cast<signed char>(i);
  }
  return t;
}
constexpr auto kBase64Table = make_base64_table();

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

}  // namespace

std::string gzip_compress(std::string_view data) {
  z_stream zs{};
  int rc = deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  if (rc != Z_OK) throw std::runtime_error(zlib_error("deflateInit2", rc, zs));
  DeflateGuard guard{&zs};

  std::string out;
  std::string_view rest = data;
  std::array<char, kOutChunk> buf;
  do {
    feed(zs, rest);
    const int flush = rest.empty() ? Z_FINISH : Z_NO_FLUSH;
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = deflate(&zs, flush);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) throw std::runtime_error(zlib_error("deflate", rc, zs));
    out.append(buf.data(), buf.size() - zs.avail_out);
  } while (rc != Z_STREAM_END);
  return out;
}

std::string gzip_decompress(std::string_view data, std::size_t max_out) {
  z_stream zs{};
  int rc = inflateInit2(&zs, 15 + 16);
  if (rc != Z_OK) throw std::runtime_error(zlib_error("inflateInit2", rc, zs));
  InflateGuard guard{&zs};

  if (data.empty()) throw std::runtime_error("gzip: empty input");
  std::string out;
  std::string_view rest = data;
  std::array<char, kOutChunk> buf;
  for (;;) {
    feed(zs, rest);
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    const std::size_t have = buf.size() - zs.avail_out;
    if (have > max_out - out.size()) {
      throw std::runtime_error("gzip: decompressed size exceeds " + std::to_string(max_out) + " bytes");
    }
    out.append(buf.data(), have);

    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0 && rest.empty()) return out;
      // Another member follows (RFC 1952 2.2); anything else there fails in
      // inflate's header check on the next round.
      rc = inflateReset(&zs);
      if (rc != Z_OK) throw std::runtime_error(zlib_error("inflateReset", rc, zs));
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && rest.empty()) throw std::runtime_error("gzip: truncated input");
    if (rc == Z_NEED_DICT) throw std::runtime_error("gzip: corrupt input: needs a preset dictionary");
    throw std::runtime_error(zlib_error("corrupt input", rc, zs));
  }
}

std::string base64_encode(std::string_view data) {
  // EVP_EncodeBlock takes an int length; whole 3-byte groups per call keep
  // the pieces' outputs concatenable.
  constexpr std::size_t kPiece = 3u << 28;
  std::string out((data.size() + 2) / 3 * 4, '\0');
  std::size_t written = 0;
  for (std::size_t off = 0; off < data.size(); off += kPiece) {
    const std::size_t n = std::min(kPiece, data.size() - off);
    const int w = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + written),
                                  reinterpret_cast<const unsigned char*>(data.data() + off), static_cast<int>(n));
    written += static_cast<std::size_t>(w);
  }
  out.resize(written);
  return out;
}

std::string base64_decode(std::string_view text) {
  // Hand-written: EVP_DecodeBlock skips surrounding whitespace and returns the
  // padding as zero bytes, both of which would let bad input through.
  if (text.size() % 4 != 0) throw std::invalid_argument("base64: length is not a multiple of 4");
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;

  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const std::size_t group_pad = last ? pad : 0;
    std::uint32_t v = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const auto c = static_cast<unsigned char>(text[i + j]);
      std::int32_t d = 0;
      if (j < 4 - group_pad) {
        d = kBase64Table[c];
        if (d < 0) throw std::invalid_argument("base64: invalid character at offset " + std::to_string(i + j));
      }
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    out += static_cast<char>(v >> 16);
    if (group_pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (group_pad < 1) out += static_cast<char>(v & 0xff);
    if ((group_pad == 1 && (v & 0xff) != 0) || (group_pad == 2 && (v & 0xffff) != 0)) {
      throw std::invalid_argument("base64: non-zero bits after the last byte");
    }
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256: EVP_Digest failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

bool is_sha256_hex(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), is_hex);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool is_utf8(std::string_view data) {
  for (std::size_t i = 0; i < data.size();) {
    const std::size_t n = utf8_sequence(data, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace postern::policy
