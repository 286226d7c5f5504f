//! Every HMAC the server makes or checks goes through here: one signer, one verifier that
//! decodes the signature and compares it in full length in constant time.
//!
//! Keys are separated by purpose. Webhooks are signed with `webhook_secret`, which receivers
//! are given; talk result links and D-ID callbacks are signed with keys derived (HKDF-SHA256,
//! one label each) from `signing_secret`, which nobody outside the server ever sees. Knowing a
//! webhook secret therefore mints no link and wakes no callback.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a derived key signs; its label is part of the derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `GET /talks/{id}/result.mp4?expires=&signature=`.
    TalkResult,
    /// `POST /callbacks/d-id/{waiter}?signature=`.
    DidCallback,
}

/// What a D-ID callback URL's signature covers: the generation it wakes.
pub fn did_callback_message(generation_id: &str) -> Vec<u8> {
    format!("did-callback:{generation_id}").into_bytes()
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::TalkResult => b"reelsmith v1 talk-result link",
            Purpose::DidCallback => b"reelsmith v1 d-id callback",
        }
    }
}

/// The server's derived signing keys.
#[derive(Clone)]
pub struct Keys {
    talk_result: [u8; 32],
    did_callback: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Derives one key per purpose from the master secret.
    pub fn derive(master: &[u8]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"reelsmith-signing"), master);
        let expand = |p: Purpose| {
            let mut k = [0u8; 32];
            hk.expand(p.label(), &mut k).expect("32 bytes is a valid HKDF-SHA256 length");
            k
        };
        Self { talk_result: expand(Purpose::TalkResult), did_callback: expand(Purpose::DidCallback) }
    }

    fn key(&self, p: Purpose) -> &[u8] {
        match p {
            Purpose::TalkResult => &self.talk_result,
            Purpose::DidCallback => &self.did_callback,
        }
    }

    pub fn sign(&self, p: Purpose, message: &[u8]) -> String {
        sign(self.key(p), message)
    }

    pub fn verify(&self, p: Purpose, message: &[u8], signature_hex: &str) -> bool {
        verify(self.key(p), message, signature_hex)
    }
}

/// HMAC-SHA256 of `message`, as lowercase hex.
pub fn sign(key: &[u8], message: &[u8]) -> String {
    hex::encode(mac(key, message).finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC-SHA256 of `message` under `key`. The signature is
/// decoded first (hex, either case: the same bytes are the same signature) and compared in full
/// length in constant time; anything that is not exactly 32 bytes of hex is refused.
pub fn verify(key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    // 64 hex digits at most: a longer value is refused before any work.
    if signature_hex.len() != 64 {
        return false;
    }
    let Ok(signature) = hex::decode(signature_hex) else { return false };
    mac(key, message).verify_slice(&signature).is_ok()
}

fn mac(key: &[u8], message: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(message);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"test key";

    #[test]
    fn verify_accepts_only_the_whole_signature() {
        let good = sign(KEY, b"talk-result:gen_1:99");
        assert!(verify(KEY, b"talk-result:gen_1:99", &good));
        // The same bytes in upper case decode to the same signature.
        assert!(verify(KEY, b"talk-result:gen_1:99", &good.to_uppercase()));
        // Empty, one character, a prefix, the whole plus more, and every single-digit change.
        assert!(!verify(KEY, b"talk-result:gen_1:99", ""));
        assert!(!verify(KEY, b"talk-result:gen_1:99", &good[..1]));
        assert!(!verify(KEY, b"talk-result:gen_1:99", &good[..63]));
        assert!(!verify(KEY, b"talk-result:gen_1:99", &format!("{good}0")));
        assert!(!verify(KEY, b"talk-result:gen_1:99", &format!("{good}{good}")));
        for i in 0..good.len() {
            let mut t = good.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            assert!(!verify(KEY, b"talk-result:gen_1:99", std::str::from_utf8(&t).unwrap()), "digit {i}");
        }
        // Not hex, wrong message, wrong key.
        assert!(!verify(KEY, b"talk-result:gen_1:99", &"z".repeat(64)));
        assert!(!verify(KEY, b"talk-result:gen_2:99", &good));
        assert!(!verify(b"other key", b"talk-result:gen_1:99", &good));
    }

    #[test]
    fn purposes_have_separate_keys_unrelated_to_the_master() {
        let keys = Keys::derive(b"master");
        let link = keys.sign(Purpose::TalkResult, b"m");
        assert!(keys.verify(Purpose::TalkResult, b"m", &link));
        assert!(!keys.verify(Purpose::DidCallback, b"m", &link));
        // Signing with the master itself (what a holder of another secret could do) is refused.
        assert!(!keys.verify(Purpose::TalkResult, b"m", &sign(b"master", b"m")));
        assert_ne!(Keys::derive(b"other").sign(Purpose::TalkResult, b"m"), link);
    }

    #[test]
    fn hkdf_matches_rfc_5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0u8..=12).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let mut okm = [0u8; 42];
        hkdf::Hkdf::<Sha256>::new(Some(&salt), &ikm).expand(&info, &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }
}
