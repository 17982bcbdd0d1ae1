#include "common/crypto/keys.hpp"

#include <gtest/gtest.h>

#include "common/crypto/password.hpp"
#include "common/crypto/random.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "support/certs.hpp"
#include "support/files.hpp"

namespace postern::crypto {
namespace {

using testing::test_certs;

TEST(Keys, Ed25519SignsAndItsPublicKeyVerifies) {
  const auto key = SigningKey::from_file(test_certs().signing_key);
  const auto pub = load_verify_keys({test_certs().signing_pub});
  ASSERT_EQ(pub.size(), 1u);
  EXPECT_EQ(pub[0].key_id(), key.key_id());
  EXPECT_EQ(key.key_id().size(), 16u);
  const std::string sig = key.sign("hello");
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(pub[0].verify("hello", sig));
  EXPECT_FALSE(pub[0].verify("hellO", sig));
  std::string bad = sig;
  bad[3] ^= 1;
  EXPECT_FALSE(pub[0].verify("hello", bad));
  EXPECT_FALSE(pub[0].verify("hello", ""));
}

TEST(Keys, EcdsaP256IsAcceptedOtherKeysAreNot) {
  // The dev CA's key is EC P-256.
  const auto ec = SigningKey::from_file(test_certs().dir + "/ca.key");
  const auto pub = VerifyKey::from_pem(ec.public_pem(), "ec");
  EXPECT_TRUE(pub.verify("x", ec.sign("x")));
  EXPECT_FALSE(pub.verify("y", ec.sign("x")));
  // A certificate is not a public key file; garbage is not a key.
  EXPECT_THROW(load_verify_keys({test_certs().ca}), std::runtime_error);
  EXPECT_THROW(SigningKey::from_pem("not a key", "x"), std::runtime_error);
  try {
    load_verify_keys({"/nonexistent/key.pub"});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/key.pub"), std::string::npos) << e.what();
  }
}

TEST(Keys, AFileMayHoldSeveralPublicKeys) {
  testing::TempDir dir("keys");
  const std::string both = testing::read_file(test_certs().signing_pub) + testing::read_file(test_certs().rogue_signing_pub);
  testing::write_file(dir.file("both.pub"), both);
  EXPECT_EQ(load_verify_keys({dir.file("both.pub")}).size(), 2u);
}

TEST(SignedSnapshot, OnlyATrustedKeysSignatureOverTheExactBytesIsAccepted) {
  const auto key = SigningKey::from_file(test_certs().signing_key);
  const auto rogue = SigningKey::from_file(test_certs().rogue_signing_key);
  const auto trusted = policy::SnapshotKeys::load({test_certs().signing_pub}, "trusted_config_keys");
  policy::v1::Snapshot snap;
  snap.set_version(42);
  snap.mutable_config()->add_apis()->set_name("orders");
  auto wire = policy::sign_snapshot(snap, key);
  policy::v1::Snapshot out;
  EXPECT_EQ(trusted->open(wire, out), "");
  EXPECT_EQ(out.version(), 42u);
  EXPECT_EQ(out.config().apis(0).name(), "orders");

  // Forged by a key nobody trusts, even naming the trusted key's id.
  auto forged = policy::sign_snapshot(snap, rogue);
  EXPECT_NE(trusted->open(forged, out).find("not trusted"), std::string::npos);
  forged.set_key_id(key.key_id());
  EXPECT_NE(trusted->open(forged, out).find("does not match"), std::string::npos);
  // A version bumped after signing.
  policy::v1::Snapshot bumped = snap;
  bumped.set_version(1u << 30);
  auto tampered = wire;
  tampered.set_snapshot(bumped.SerializeAsString());
  EXPECT_NE(trusted->open(tampered, out).find("does not match"), std::string::npos);
  // Unsigned.
  tampered = wire;
  tampered.clear_signature();
  EXPECT_NE(trusted->open(tampered, out).find("not signed"), std::string::npos);
  EXPECT_THROW(policy::SnapshotKeys::load({}, "trusted_config_keys"), std::runtime_error);
}

TEST(Password, HashesAreSaltedAndVerify) {
  const auto a = hash_password("correct horse", kMinPasswordIterations);
  const auto b = hash_password("correct horse", kMinPasswordIterations);
  EXPECT_NE(a, b);  // salted
  EXPECT_TRUE(a.starts_with("$pbkdf2-sha256$i=100000$")) << a;
  EXPECT_FALSE(password_hash_problem(a));
  EXPECT_TRUE(verify_password("correct horse", a));
  EXPECT_TRUE(verify_password("correct horse", b));
  EXPECT_FALSE(verify_password("correct horsE", a));
  EXPECT_FALSE(verify_password("", a));
}

TEST(Password, MalformedOrWeakHashesAreRefused) {
  EXPECT_TRUE(password_hash_problem("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"));
  EXPECT_TRUE(password_hash_problem("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$AAAA"));  // too few iterations
  EXPECT_TRUE(password_hash_problem("$pbkdf2-sha256$i=99999999$c2FsdHNhbHQ$AAAA"));
  EXPECT_TRUE(password_hash_problem("$pbkdf2-sha256$i=100000$c2FsdHNhbHQ$AAAA"));  // hash not 32 bytes
  EXPECT_TRUE(password_hash_problem("$pbkdf2-sha256$i=100000$$"));
  EXPECT_FALSE(verify_password("x", "$pbkdf2-sha256$i=abc$c2FsdA$AAAA"));
}

TEST(Random, HexOfTheAskedLengthAndNeverTheSame) {
  const auto a = random_hex(16), b = random_hex(16);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

}  // namespace
}  // namespace postern::crypto
