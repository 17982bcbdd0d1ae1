#include "common/policy/codec.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>

namespace postern::policy {
namespace {

std::string bytes(std::initializer_list<unsigned char> b) { return std::string(b.begin(), b.end()); }

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// `printf 'hello, postern\n' | gzip -c -n`
const std::string kHelloGz =
    bytes({0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xd7, 0x51, 0x28,
           0xc8, 0x2f, 0x2e, 0x49, 0x2d, 0xca, 0xe3, 0x02, 0x00, 0x2c, 0xaa, 0xdb, 0xef, 0x0f, 0x00, 0x00, 0x00});
// `printf 'second\n' | gzip -c -n -9`
const std::string kSecondGz = bytes({0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x2b, 0x4e, 0x4d,
                                     0xce, 0xcf, 0x4b, 0xe1, 0x02, 0x00, 0x7e, 0xc0, 0x0f, 0x06, 0x07, 0x00, 0x00, 0x00});

TEST(Codec, GzipRoundTripEmpty) {
  const auto gz = gzip_compress("");
  EXPECT_EQ(gz.substr(0, 2), "\x1f\x8b");
  EXPECT_EQ(gzip_decompress(gz), "");
}

TEST(Codec, GzipRoundTripOneByte) {
  const std::string one(1, '\0');
  EXPECT_EQ(gzip_decompress(gzip_compress(one)), one);
  EXPECT_EQ(gzip_decompress(gzip_compress("x")), "x");
}

TEST(Codec, GzipRoundTripOneMebibyteRandom) {
  const auto data = random_bytes(1u << 20, 42);
  const auto gz = gzip_compress(data);
  EXPECT_EQ(gzip_decompress(gz), data);
}

TEST(Codec, GzipRoundTripCompressible) {
  const std::string data(5u << 20, 'a');
  const auto gz = gzip_compress(data);
  EXPECT_LT(gz.size(), 64u * 1024);
  EXPECT_EQ(gzip_decompress(gz), data);
}

TEST(Codec, GzipDecompressesGzipToolOutput) {
  EXPECT_EQ(gzip_decompress(kHelloGz), "hello, postern\n");
}

TEST(Codec, GzipDecompressesPipedGzip) {
  FILE* p = popen("printf 'piped\\nthrough gzip\\n' | gzip -c 2>/dev/null", "r");
  ASSERT_NE(p, nullptr);
  std::string gz;
  char buf[4096];
  for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) gz.append(buf, n);
  const int status = pclose(p);
  if (status != 0 || gz.empty()) GTEST_SKIP() << "gzip(1) not available";
  EXPECT_EQ(gzip_decompress(gz), "piped\nthrough gzip\n");
}

TEST(Codec, GzipOurOutputIsReadableByGzipTool) {
  const std::string path = ::testing::TempDir() + "codec_test_out.gz";
  const auto gz = gzip_compress("made by postern\n");
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(gz.data(), 1, gz.size(), f), gz.size());
  std::fclose(f);
  FILE* p = popen(("gzip -dc '" + path + "' 2>/dev/null").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  std::remove(path.c_str());
  if (status != 0 && out.empty()) GTEST_SKIP() << "gzip(1) not available";
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "made by postern\n");
}

TEST(Codec, GzipConcatenatedMembers) {
  EXPECT_EQ(gzip_decompress(kHelloGz + kSecondGz), "hello, postern\nsecond\n");
  EXPECT_EQ(gzip_decompress(gzip_compress("") + gzip_compress("a")), "a");
}

TEST(Codec, GzipCorruptInputThrows) {
  EXPECT_THROW(gzip_decompress(""), std::runtime_error);
  EXPECT_THROW(gzip_decompress("not gzip at all"), std::runtime_error);
  EXPECT_THROW(gzip_decompress(std::string(100, '\0')), std::runtime_error);

  // Truncated anywhere.
  for (std::size_t n = 1; n < kHelloGz.size(); ++n) {
    EXPECT_THROW(gzip_decompress(kHelloGz.substr(0, n)), std::runtime_error) << n;
  }
  // Flipped bit in the deflate data or CRC.
  for (std::size_t i = 10; i < kHelloGz.size(); ++i) {
    auto bad = kHelloGz;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_THROW(gzip_decompress(bad), std::runtime_error) << i;
  }
  // Trailing junk that is not another member.
  EXPECT_THROW(gzip_decompress(kHelloGz + "x"), std::runtime_error);
  EXPECT_THROW(gzip_decompress(kHelloGz + std::string(8, '\0')), std::runtime_error);
  // A raw zlib stream is not gzip.
  EXPECT_THROW(gzip_decompress(bytes({0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})), std::runtime_error);
}

TEST(Codec, GzipOutputLimit) {
  const std::string data(1u << 20, 'z');
  const auto gz = gzip_compress(data);
  EXPECT_EQ(gzip_decompress(gz, data.size()), data);
  EXPECT_THROW(gzip_decompress(gz, data.size() - 1), std::runtime_error);
  EXPECT_THROW(gzip_decompress(gz, 0), std::runtime_error);
  EXPECT_EQ(gzip_decompress(gzip_compress(""), 0), "");
  try {
    gzip_decompress(gz, 1000);
    FAIL() << "no throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds 1000 bytes"), std::string::npos) << e.what();
  }
  // The limit covers all members together.
  EXPECT_THROW(gzip_decompress(kHelloGz + kSecondGz, 20), std::runtime_error);
  EXPECT_EQ(gzip_decompress(kHelloGz + kSecondGz, 22).size(), 22u);
}

TEST(Codec, Base64Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},          {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded) << plain;
    EXPECT_EQ(base64_decode(encoded), plain) << encoded;
  }
}

TEST(Codec, Base64BinaryRoundTrip) {
  EXPECT_EQ(base64_encode(bytes({0xfb, 0xff, 0xbf})), "+/+/");
  EXPECT_EQ(base64_decode("+/+/"), bytes({0xfb, 0xff, 0xbf}));
  for (std::size_t n = 0; n < 70; ++n) {
    const auto data = random_bytes(n, static_cast<unsigned>(n));
    const auto enc = base64_encode(data);
    EXPECT_EQ(enc.size(), (n + 2) / 3 * 4);
    EXPECT_EQ(base64_decode(enc), data) << n;
  }
  const auto big = random_bytes(1u << 20, 7);
  EXPECT_EQ(base64_decode(base64_encode(big)), big);
}

TEST(Codec, Base64RejectsBadInput) {
  for (const char* bad : {"Zg", "Zg=", "Zm9", "Z", "Zg==Zg==", "Zm9v\n", " Zm9v", "Zm9v YmFy", "Zm-v", "Zm_v",
                          "====", "Z===", "=Zg=", "Zg=a", "Zm9vYg=", "Zm9vYg===", "Zh==", "Zm9="}) {
    EXPECT_THROW(base64_decode(bad), std::invalid_argument) << bad;
  }
  EXPECT_THROW(base64_decode(std::string("Zm\0v", 4)), std::invalid_argument);
  EXPECT_THROW(base64_decode("Zm9v\xff\xff\xff\xff"), std::invalid_argument);
}

TEST(Codec, Sha256) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Codec, IsSha256Hex) {
  const std::string lower = sha256_hex("abc");
  EXPECT_TRUE(is_sha256_hex(lower));
  std::string upper = lower;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(is_sha256_hex(upper));
  EXPECT_TRUE(is_sha256_hex(std::string(64, '0')));
  EXPECT_FALSE(is_sha256_hex(""));
  EXPECT_FALSE(is_sha256_hex(lower.substr(1)));
  EXPECT_FALSE(is_sha256_hex(lower + "0"));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a') + "g"));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a') + " "));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a') + '\0'));
}

TEST(Codec, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_TRUE(constant_time_equal("secret", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(constant_time_equal("secret", "Secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secret "));
  EXPECT_FALSE(constant_time_equal("", "x"));
  EXPECT_TRUE(constant_time_equal(std::string("a\0b", 3), std::string("a\0b", 3)));
  EXPECT_FALSE(constant_time_equal(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(Codec, Utf8Valid) {
  EXPECT_TRUE(is_utf8(""));
  EXPECT_TRUE(is_utf8("plain ascii\n"));
  EXPECT_TRUE(is_utf8(std::string("nul\0inside", 10)));
  EXPECT_TRUE(is_utf8("h\xc3\xa9llo"));                      // é
  EXPECT_TRUE(is_utf8("\xe2\x82\xac"));                      // €
  EXPECT_TRUE(is_utf8("\xf0\x9f\x98\x80"));                  // U+1F600
  EXPECT_TRUE(is_utf8("\xc2\x80"));                          // U+0080, smallest 2-byte
  EXPECT_TRUE(is_utf8("\xdf\xbf"));                          // U+07FF
  EXPECT_TRUE(is_utf8("\xe0\xa0\x80"));                      // U+0800, smallest 3-byte
  EXPECT_TRUE(is_utf8("\xed\x9f\xbf"));                      // U+D7FF, just below surrogates
  EXPECT_TRUE(is_utf8("\xee\x80\x80"));                      // U+E000, just above
  EXPECT_TRUE(is_utf8("\xef\xbf\xbf"));                      // U+FFFF
  EXPECT_TRUE(is_utf8("\xf0\x90\x80\x80"));                  // U+10000, smallest 4-byte
  EXPECT_TRUE(is_utf8("\xf4\x8f\xbf\xbf"));                  // U+10FFFF, largest
  EXPECT_TRUE(is_utf8("\xef\xbb\xbf" "BOM is fine"));
}

TEST(Codec, Utf8Invalid) {
  EXPECT_FALSE(is_utf8("\x80"));                  // lone continuation
  EXPECT_FALSE(is_utf8("\xbf"));
  EXPECT_FALSE(is_utf8("\xc3"));                  // truncated
  EXPECT_FALSE(is_utf8("\xe2\x82"));
  EXPECT_FALSE(is_utf8("\xf0\x9f\x98"));
  EXPECT_FALSE(is_utf8("\xc3\x28"));              // bad continuation
  EXPECT_FALSE(is_utf8("\xe2\x28\xa1"));
  EXPECT_FALSE(is_utf8("\xe2\x82\x28"));
  EXPECT_FALSE(is_utf8("\xf0\x9f\x28\x80"));
  EXPECT_FALSE(is_utf8("\xc0\xaf"));              // overlong '/'
  EXPECT_FALSE(is_utf8("\xc1\xbf"));
  EXPECT_FALSE(is_utf8("\xe0\x80\xaf"));          // overlong 3-byte
  EXPECT_FALSE(is_utf8("\xe0\x9f\xbf"));
  EXPECT_FALSE(is_utf8("\xf0\x80\x80\xaf"));      // overlong 4-byte
  EXPECT_FALSE(is_utf8("\xf0\x8f\xbf\xbf"));
  EXPECT_FALSE(is_utf8("\xed\xa0\x80"));          // U+D800 surrogate
  EXPECT_FALSE(is_utf8("\xed\xbf\xbf"));          // U+DFFF
  EXPECT_FALSE(is_utf8("\xed\xa0\xbd\xed\xb8\x80"));  // CESU-8 pair
  EXPECT_FALSE(is_utf8("\xf4\x90\x80\x80"));      // U+110000
  EXPECT_FALSE(is_utf8("\xf5\x80\x80\x80"));
  EXPECT_FALSE(is_utf8("\xf8\x88\x80\x80\x80"));  // old 5-byte form
  EXPECT_FALSE(is_utf8("\xfe"));
  EXPECT_FALSE(is_utf8("\xff"));
  EXPECT_FALSE(is_utf8("ok\xc3\xa9" "then\x80"));
}

}  // namespace
}  // namespace postern::policy
