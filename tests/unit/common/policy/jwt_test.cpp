#include "common/policy/jwt.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/jwt_keys.hpp"

namespace postern::policy {
namespace {

using std::chrono::seconds;
using std::chrono::system_clock;

constexpr long long kNow = 1'700'000'000;
const system_clock::time_point kNowTp{seconds(kNow)};

using postern::testing::b64url;
using postern::testing::ec_jwk;
using postern::testing::jwks;
using postern::testing::make_ec_key;
using postern::testing::make_rsa_key;
using postern::testing::PkeyPtr;
using postern::testing::rsa_jwk;
using postern::testing::signed_jwt;

std::string claims(const std::string& extra = "") {
  return R"({"sub":"alice","exp":)" + std::to_string(kNow + 300) + extra + "}";
}

class JwtTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_a_ = make_rsa_key();
    rsa_b_ = make_rsa_key();
    ec_ = make_ec_key();
    keys_ = Jwks::parse(jwks({rsa_jwk(rsa_a_.get(), "rsa-a"), rsa_jwk(rsa_b_.get(), "rsa-b"), ec_jwk(ec_.get(), "ec")}));
  }
  static void TearDownTestSuite() {
    keys_.reset();
    rsa_a_.reset();
    rsa_b_.reset();
    ec_.reset();
  }

  // Verifies, and checks the rule every failure must keep: the error never
  // echoes the token or any of its parts.
  JwtResult verify(const std::string& tok, const JwtExpectations& expect = {}, const Jwks* keys = nullptr) {
    auto r = verify_jwt(tok, keys ? *keys : *keys_, expect, kNowTp);
    if (!r.ok) {
      EXPECT_FALSE(r.error.empty());
      // Parts shorter than 4 characters ("", "e") would match by chance.
      std::size_t start = 0;
      while (start <= tok.size()) {
        const auto end = std::min(tok.find('.', start), tok.size());
        const auto part = tok.substr(start, end - start);
        if (part.size() >= 4) {
          EXPECT_EQ(r.error.find(part), std::string::npos) << r.error;
        }
        start = end + 1;
      }
    }
    return r;
  }

  static inline PkeyPtr rsa_a_;
  static inline PkeyPtr rsa_b_;
  static inline PkeyPtr ec_;
  static inline std::shared_ptr<const Jwks> keys_;
};

const std::string kRsA = R"({"alg":"RS256","kid":"rsa-a"})";
const std::string kEs = R"({"alg":"ES256","kid":"ec"})";

TEST_F(JwtTest, ValidRs256ReturnsSubject) {
  const auto r = verify(signed_jwt(rsa_a_.get(), kRsA, claims()));
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.subject, "alice");
  EXPECT_TRUE(r.error.empty());
}

TEST_F(JwtTest, ValidEs256ReturnsSubject) {
  const auto r = verify(signed_jwt(ec_.get(), kEs, claims()));
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.subject, "alice");
}

TEST_F(JwtTest, ValidWithoutKidTriesEveryKeyOfTheKind) {
  EXPECT_TRUE(verify(signed_jwt(rsa_b_.get(), R"({"alg":"RS256"})", claims())).ok);
  EXPECT_TRUE(verify(signed_jwt(ec_.get(), R"({"alg":"ES256","typ":"JWT"})", claims())).ok);
}

TEST_F(JwtTest, KidSelectsOnlyThatKey) {
  EXPECT_TRUE(verify(signed_jwt(rsa_b_.get(), R"({"alg":"RS256","kid":"rsa-b"})", claims())).ok);
  // Signed by b but naming a: a alone is tried, so the signature fails.
  const auto r = verify(signed_jwt(rsa_b_.get(), kRsA, claims()));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "bad signature");
}

TEST_F(JwtTest, UnknownKid) {
  const auto r = verify(signed_jwt(rsa_a_.get(), R"({"alg":"RS256","kid":"nope"})", claims()));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "unknown key id");
}

TEST_F(JwtTest, KidOfOtherKindIsNoKeyForAlg) {
  const auto r = verify(signed_jwt(rsa_a_.get(), R"({"alg":"RS256","kid":"ec"})", claims()));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "no key for alg RS256");
}

TEST_F(JwtTest, CustomIdentifyingClaim) {
  JwtExpectations expect;
  expect.claim = "email";
  const auto r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"email":"a@example.com")")), expect);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.subject, "a@example.com");
}

TEST_F(JwtTest, MissingOrEmptySubject) {
  auto r = verify(signed_jwt(rsa_a_.get(), kRsA, R"({"exp":)" + std::to_string(kNow + 60) + "}"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "missing or empty 'sub' claim");
  r = verify(signed_jwt(rsa_a_.get(), kRsA, R"({"sub":"","exp":)" + std::to_string(kNow + 60) + "}"));
  EXPECT_EQ(r.error, "missing or empty 'sub' claim");
  r = verify(signed_jwt(rsa_a_.get(), kRsA, R"({"sub":42,"exp":)" + std::to_string(kNow + 60) + "}"));
  EXPECT_EQ(r.error, "missing or empty 'sub' claim");
}

TEST_F(JwtTest, Expired) {
  const auto r = verify(signed_jwt(rsa_a_.get(), kRsA, R"({"sub":"alice","exp":)" + std::to_string(kNow - 31) + "}"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token expired");
}

TEST_F(JwtTest, ExpiredWithinLeewayIsAccepted) {
  const auto tok = signed_jwt(rsa_a_.get(), kRsA, R"({"sub":"alice","exp":)" + std::to_string(kNow - 30) + "}");
  EXPECT_TRUE(verify(tok).ok);
  JwtExpectations strict;
  strict.leeway = seconds(0);
  EXPECT_EQ(verify(tok, strict).error, "token expired");
}

TEST_F(JwtTest, MissingOrNonNumericExp) {
  auto r = verify(signed_jwt(rsa_a_.get(), kRsA, R"({"sub":"alice"})"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "missing exp claim");
  r = verify(signed_jwt(rsa_a_.get(), kRsA, R"({"sub":"alice","exp":"9999999999"})"));
  EXPECT_EQ(r.error, "exp claim is not a number");
}

TEST_F(JwtTest, NotYetValid) {
  auto r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"nbf":)" + std::to_string(kNow + 31))));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token not yet valid");
  r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"nbf":)" + std::to_string(kNow + 30))));
  EXPECT_TRUE(r.ok) << r.error;
  r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"nbf":"soon")")));
  EXPECT_EQ(r.error, "nbf claim is not a number");
}

TEST_F(JwtTest, Issuer) {
  JwtExpectations expect;
  expect.issuer = "https://idp.example";
  EXPECT_TRUE(verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"iss":"https://idp.example")")), expect).ok);
  auto r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"iss":"https://evil.example")")), expect);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "wrong issuer");
  r = verify(signed_jwt(rsa_a_.get(), kRsA, claims()), expect);
  EXPECT_EQ(r.error, "wrong issuer");
}

TEST_F(JwtTest, AudienceAsString) {
  JwtExpectations expect;
  expect.audiences = {"api", "gateway"};
  EXPECT_TRUE(verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"aud":"gateway")")), expect).ok);
  const auto r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"aud":"other")")), expect);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "wrong audience");
}

TEST_F(JwtTest, AudienceAsArray) {
  JwtExpectations expect;
  expect.audiences = {"gateway"};
  EXPECT_TRUE(verify(signed_jwt(ec_.get(), kEs, claims(R"(,"aud":["x","gateway"])")), expect).ok);
  auto r = verify(signed_jwt(ec_.get(), kEs, claims(R"(,"aud":["x","y"])")), expect);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "wrong audience");
  r = verify(signed_jwt(ec_.get(), kEs, claims()), expect);
  EXPECT_EQ(r.error, "wrong audience");
}

TEST_F(JwtTest, AudienceIgnoredWhenNotExpected) {
  EXPECT_TRUE(verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"aud":"anything")"))).ok);
}

TEST_F(JwtTest, TamperedPayloadFailsSignature) {
  const auto good = signed_jwt(rsa_a_.get(), kRsA, claims());
  const auto dot1 = good.find('.');
  const auto dot2 = good.find('.', dot1 + 1);
  const auto forged = good.substr(0, dot1 + 1) + b64url(R"({"sub":"admin","exp":)" + std::to_string(kNow + 300) + "}") +
                      good.substr(dot2);
  auto r = verify(forged);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "bad signature");

  const auto good_ec = signed_jwt(ec_.get(), kEs, claims());
  const auto e1 = good_ec.find('.');
  const auto e2 = good_ec.find('.', e1 + 1);
  r = verify(good_ec.substr(0, e1 + 1) + b64url(R"({"sub":"admin","exp":)" + std::to_string(kNow + 300) + "}") +
             good_ec.substr(e2));
  EXPECT_EQ(r.error, "bad signature");
}

TEST_F(JwtTest, AlgNoneRejected) {
  const auto tok = b64url(R"({"alg":"none"})") + "." + b64url(claims()) + ".";
  const auto r = verify(tok);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "unsupported alg 'none'");
}

TEST_F(JwtTest, AlgHs256Rejected) {
  // The classic confusion attack: HMAC keyed with public key bytes. Never tried.
  const auto tok = b64url(R"({"alg":"HS256","kid":"rsa-a"})") + "." + b64url(claims()) + "." + b64url("mac");
  const auto r = verify(tok);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "unsupported alg 'HS256'");
}

TEST_F(JwtTest, StrangeAlgIsNotEchoed) {
  const auto tok = b64url(R"({"alg":"<script>alert(1)</script>"})") + "." + b64url(claims()) + "." + b64url("x");
  const auto r = verify(tok);
  EXPECT_EQ(r.error, "unsupported alg");
  // Registered names are echoed; anything else (even a near miss) is not.
  EXPECT_EQ(verify(b64url(R"({"alg":"RS512"})") + "." + b64url(claims()) + ".").error, "unsupported alg 'RS512'");
  EXPECT_EQ(verify(b64url(R"({"alg":"rs256"})") + "." + b64url(claims()) + ".").error, "unsupported alg");
  EXPECT_EQ(verify(b64url(R"({"typ":"JWT"})") + "." + b64url(claims()) + ".").error,
            "malformed token: header has no alg");
}

TEST_F(JwtTest, CritHeaderRejected) {
  const auto r = verify(signed_jwt(rsa_a_.get(), R"({"alg":"RS256","kid":"rsa-a","crit":["exp"]})", claims()));
  EXPECT_EQ(r.error, "unsupported crit header");
}

TEST_F(JwtTest, Es256SignatureOfWrongLength) {
  const auto good = signed_jwt(ec_.get(), kEs, claims());
  const auto dot2 = good.rfind('.');
  const auto input = good.substr(0, dot2);
  auto r = verify(input + "." + b64url(std::string(63, 'A')));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "bad ES256 signature length");
  r = verify(input + "." + b64url(std::string(65, 'A')));
  EXPECT_EQ(r.error, "bad ES256 signature length");
  // A DER signature (what OpenSSL emits) is not valid in a JWS.
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::size_t len = 80;
  std::string der(len, '\0');
  ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, ec_.get()), 1);
  ASSERT_EQ(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(der.data()), &len,
                           reinterpret_cast<const unsigned char*>(input.data()), input.size()),
            1);
  der.resize(len);
  ASSERT_NE(der.size(), 64u);
  r = verify(input + "." + b64url(der));
  EXPECT_EQ(r.error, "bad ES256 signature length");
}

TEST_F(JwtTest, ZeroEs256SignatureRejected) {
  const auto good = signed_jwt(ec_.get(), kEs, claims());
  const auto r = verify(good.substr(0, good.rfind('.')) + "." + b64url(std::string(64, '\0')));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "bad signature");
}

TEST_F(JwtTest, MalformedTokens) {
  const auto good = signed_jwt(rsa_a_.get(), kRsA, claims());
  const auto dot2 = good.rfind('.');
  EXPECT_EQ(verify(good.substr(0, dot2)).error, "malformed token: expected three dot-separated parts");
  EXPECT_EQ(verify(good + ".x").error, "malformed token: expected three dot-separated parts");
  EXPECT_EQ(verify("").error, "malformed token: expected three dot-separated parts");
  EXPECT_EQ(verify("..").error, "malformed token: header is not a JSON object");

  std::string bad = good;
  bad[3] = '+';
  EXPECT_EQ(verify(bad).error, "malformed token: bad base64url in header");
  EXPECT_EQ(verify(good.substr(0, dot2 - 2) + "*" + good.substr(dot2 - 1)).error,
            "malformed token: bad base64url in payload");
  EXPECT_EQ(verify(good + "=").error, "malformed token: bad base64url in signature");
  EXPECT_EQ(verify(good + "AAA").error, "malformed token: bad base64url in signature");
  // 256 signature bytes leave 4 unused bits in the last character: they must be zero.
  ASSERT_EQ((good.size() - dot2 - 1) % 4, 2u);
  EXPECT_EQ(verify(good.substr(0, good.size() - 1) + "B").error, "malformed token: bad base64url in signature");
  EXPECT_EQ(verify(" " + good).error, "malformed token: bad base64url in header");
  EXPECT_EQ(verify(b64url("not json") + "." + b64url(claims()) + ".").error,
            "malformed token: header is not a JSON object");
  EXPECT_EQ(verify(b64url("[1]") + "." + b64url(claims()) + ".").error,
            "malformed token: header is not a JSON object");
  for (const auto& tok : {good.substr(0, dot2), bad, good + "="}) EXPECT_FALSE(verify(tok).ok);
}

TEST_F(JwtTest, PayloadNotJsonAfterGoodSignature) {
  const auto r = verify(signed_jwt(rsa_a_.get(), kRsA, "not json"));
  EXPECT_EQ(r.error, "malformed token: payload is not a JSON object");
}

TEST_F(JwtTest, OversizedTokenRejected) {
  const auto r = verify(signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"pad":")" + std::string(13000, 'p') + "\"")));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token too large");
}

TEST_F(JwtTest, ErrorsNeverContainTokenText) {
  // Values an attacker controls, placed where a careless message would quote them.
  const std::string marker = "SECRETMARKER";
  const std::vector<std::string> tokens = {
      signed_jwt(rsa_a_.get(), R"({"alg":"RS256","kid":")" + marker + "\"}", claims()),
      signed_jwt(rsa_a_.get(), kRsA, R"({"sub":")" + marker + R"(","exp":1})"),
      signed_jwt(rsa_a_.get(), kRsA, claims(R"(,"iss":")" + marker + "\"")),
      signed_jwt(rsa_a_.get(), kRsA, "{\"" + marker + "\""),
      b64url(R"({"alg":")" + marker + "\"}") + "." + b64url(claims()) + ".",
      b64url("{" + marker) + "." + b64url(claims()) + ".",
      marker + "." + marker + "." + marker,
  };
  JwtExpectations expect;
  expect.issuer = "https://idp.example";
  for (const auto& tok : tokens) {
    const auto r = verify(tok, expect);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error.find(marker), std::string::npos) << r.error;
  }
}

TEST_F(JwtTest, ConcurrentVerification) {
  const auto rs = signed_jwt(rsa_a_.get(), kRsA, claims());
  const auto es = signed_jwt(ec_.get(), kEs, claims());
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        ok += verify_jwt(rs, *keys_, {}, kNowTp).ok;
        ok += verify_jwt(es, *keys_, {}, kNowTp).ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
}

class JwtJwksTest : public JwtTest {};

TEST_F(JwtJwksTest, ParsesKeysAndSkipsOthers) {
  const auto keys = Jwks::parse(jwks({
      rsa_jwk(rsa_a_.get(), "sig", R"(,"use":"sig","alg":"RS256")"),
      rsa_jwk(rsa_b_.get(), "enc", R"(,"use":"enc")"),
      rsa_jwk(rsa_b_.get(), "ps", R"(,"alg":"PS256")"),
      ec_jwk(ec_.get(), "ec-rs", R"(,"alg":"RS256")"),
      R"({"kty":"EC","crv":"P-384","x":"AAAA","y":"AAAA"})",
      R"({"kty":"oct","k":"c2VjcmV0"})",
      ec_jwk(ec_.get(), "ec", R"(,"alg":"ES256","use":"sig")"),
  }));
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_TRUE(verify(signed_jwt(rsa_a_.get(), R"({"alg":"RS256","kid":"sig"})", claims()), {}, keys.get()).ok);
  EXPECT_EQ(verify(signed_jwt(rsa_b_.get(), R"({"alg":"RS256","kid":"enc"})", claims()), {}, keys.get()).error,
            "unknown key id");
  EXPECT_TRUE(verify(signed_jwt(ec_.get(), R"({"alg":"ES256"})", claims()), {}, keys.get()).ok);
}

TEST_F(JwtJwksTest, AcceptsPaddedBase64InKeys) {
  auto jwk = ec_jwk(ec_.get());
  // 32 bytes encode to 43 chars; a padding producer would add one '='.
  const auto x_end = jwk.find("\",\"y\"");
  jwk.insert(x_end, "=");
  EXPECT_EQ(Jwks::parse(jwks({jwk}))->size(), 1u);
}

template <typename F>
std::string invalid_argument_message(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument thrown)";
}

TEST_F(JwtJwksTest, ParseErrors) {
  EXPECT_NE(invalid_argument_message([] { Jwks::parse("{not json"); }).find("not a valid JSON object"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { Jwks::parse(""); }).find("not a valid JSON object"), std::string::npos);
  EXPECT_EQ(invalid_argument_message([] { Jwks::parse("{}"); }), "JWKS has no \"keys\" array");
  EXPECT_EQ(invalid_argument_message([] { Jwks::parse(R"({"keys":{}})"); }), "JWKS has no \"keys\" array");
  EXPECT_NE(invalid_argument_message([] { Jwks::parse(R"({"keys":[]})"); }).find("no usable key"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] {
              Jwks::parse(R"({"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},)"
                          R"({"kty":"EC","crv":"P-521","x":"AA","y":"AA"},{"kty":"RSA","alg":"RS512","n":"AQAB","e":"AQAB"}]})");
            }).find("no usable key"),
            std::string::npos);
  EXPECT_EQ(invalid_argument_message([] { Jwks::parse(R"({"keys":[{"kty":"RSA","kid":"k1","n":"ab*c","e":"AQAB"}]})"); }),
            "JWKS key 0 (kid 'k1'): bad base64url in \"n\"");
  EXPECT_EQ(invalid_argument_message([] { Jwks::parse(R"({"keys":[{"kty":"RSA","n":"AQAB"}]})"); }),
            "JWKS key 0: missing string member \"e\"");
  EXPECT_EQ(invalid_argument_message([] { Jwks::parse(R"({"keys":[42]})"); }), "JWKS key 0 is not an object");
}

TEST_F(JwtJwksTest, RejectsBrokenKeyMaterial) {
  // A point that is not on the curve.
  const std::string off_curve = R"({"keys":[{"kty":"EC","crv":"P-256","x":")" + b64url(std::string(32, '\x01')) +
                                R"(","y":")" + b64url(std::string(32, '\x01')) + R"("}]})";
  EXPECT_NE(invalid_argument_message([&] { Jwks::parse(off_curve); }).find("EC"), std::string::npos);
  const std::string short_x = R"({"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]})";
  EXPECT_NE(invalid_argument_message([&] { Jwks::parse(short_x); }).find("32 bytes"), std::string::npos);
  const PkeyPtr small = make_rsa_key(1024);
  EXPECT_NE(invalid_argument_message([&] { Jwks::parse(jwks({rsa_jwk(small.get())})); }).find("below 2048"),
            std::string::npos);
}

TEST_F(JwtJwksTest, LoadFile) {
  char path[] = "/tmp/jwt_test_jwks_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << jwks({ec_jwk(ec_.get(), "ec")});
  }
  EXPECT_EQ(Jwks::load_file(path)->size(), 1u);
  {
    std::ofstream out(path);
    out << "{}";
  }
  try {
    Jwks::load_file(path);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), std::string(path) + ": JWKS has no \"keys\" array");
  }
  std::remove(path);
}

TEST_F(JwtJwksTest, LoadMissingFile) {
  try {
    Jwks::load_file("/nonexistent/jwks.json");
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/jwks.json: cannot read: No such file or directory");
  }
}

}  // namespace
}  // namespace postern::policy
