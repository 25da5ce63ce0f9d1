//! The cryptography of crypto-shredding: the master key, per-subject data
//! keys, sealing (authenticated encryption) and MACs.
//!
//! Every cipher here is AES-256-GCM (RustCrypto `aes-gcm`, AES-NI and
//! CLMUL on our machines) with a 12-byte nonce drawn at random for every
//! message. A sealed message is `nonce (12) || ciphertext || tag (16)`, so it
//! carries all it needs besides the key and the associated data (AAD).
//!
//! Why not XChaCha20-Poly1305: the messages here are tiny (a 32-byte key, a
//! name, an e-mail address), and on our machines the RustCrypto ChaCha20 and
//! Poly1305 AVX2 backends cost 3.1 µs to seal 32 bytes where AES-256-GCM
//! takes 0.2 µs; wrapping and unwrapping are on the path of every ingested
//! batch. Its 24-byte nonce would buy nothing we need: random 12-byte nonces
//! stay safe up to 2^32 messages under one key (NIST SP 800-38D), and here
//! the master key seals one message per subject (its key) and a data key
//! seals the values of one subject only, orders of magnitude below that.
//!
//! Key bytes live in heap boxes that are overwritten with zeros when dropped
//! (`zeroize`; `aes-gcm` zeroizes its key schedule too), so moving a key
//! moves a pointer rather than leaving copies of the secret on the stack, and
//! a freed key does not linger in memory. No `Debug` output and no error
//! message ever contains key bytes or the input they were parsed from.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::Hmac;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

/// Length of every key here (master and data keys), in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the random nonce at the start of a sealed message.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag at the end of a sealed message.
pub const TAG_LEN: usize = 16;
/// What sealing adds to the plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a wrapped data key: a sealed 32-byte key.
pub const WRAPPED_LEN: usize = KEY_LEN + SEAL_OVERHEAD;

/// Prefix of the associated data of a wrapped key. It keeps a wrapped key
/// apart from anything else the master key could ever seal.
const WRAP_CONTEXT: &[u8] = b"mdm/key-wrap/v1";

/// Why a key could not be read, or a message could not be opened. The
/// messages never show key material or the text a key was parsed from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The configured master key is not the base64 encoding of 32 bytes.
    #[error("the master key is not valid: {0}")]
    InvalidMasterKey(&'static str),
    /// Authentication failed: the wrong key, the wrong associated data, or
    /// bytes that were altered or truncated. Deliberately one error: telling
    /// these apart would help an attacker and cannot help a caller.
    #[error("decryption failed: wrong key, wrong associated data or altered ciphertext")]
    Decrypt,
}

/// A 32-byte key in a zeroize-on-drop heap box.
struct Secret(Box<[u8; KEY_LEN]>);

impl Secret {
    fn random() -> Secret {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(&mut bytes[..]);
        Secret(bytes)
    }

    /// Takes the first 32 bytes of `bytes`; the caller checked the length.
    fn copy_from(bytes: &[u8]) -> Secret {
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(&bytes[..KEY_LEN]);
        Secret(key)
    }

    /// The key schedule (about 0.2 µs to compute). It zeroizes itself on drop.
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0[..]))
    }
}

/// Seals under a random nonce from the OS generator.
fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(cipher, &nonce, aad, plaintext)
}

/// Seals with a nonce the caller drew from the OS generator.
fn seal_with_nonce(cipher: &Aes256Gcm, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; NONCE_LEN + plaintext.len() + TAG_LEN];
    out[..NONCE_LEN].copy_from_slice(nonce);
    let (nonce, rest) = out.split_at_mut(NONCE_LEN);
    let (body, tag_out) = rest.split_at_mut(plaintext.len());
    body.copy_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, body)
        // The only failures are a plaintext or associated data above 64 GiB,
        // which no buffer on our machines can hold.
        .expect("AES-256-GCM seals any message below 64 GiB");
    tag_out.copy_from_slice(&tag);
    out
}

/// Checks and decrypts `sealed` into `out`. The tag is checked before
/// anything is decrypted: on failure `out` holds nothing but ciphertext.
fn open_into(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), KeyError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(KeyError::Decrypt);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    out.clear();
    out.extend_from_slice(body);
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, out, Tag::from_slice(tag))
        .map_err(|_| KeyError::Decrypt)
}

impl Clone for Secret {
    fn clone(&self) -> Secret {
        Secret(Box::new(*self.0))
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The key that wraps (encrypts) every data key in the key store. It comes
/// from configuration and is never stored beside the keys it protects:
/// whoever copies the key-store database without it has nothing readable.
pub struct MasterKey {
    secret: Secret,
    /// Its key schedule, computed once: every key-store call wraps or
    /// unwraps with it.
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn new(secret: Secret) -> MasterKey {
        MasterKey {
            cipher: secret.cipher(),
            secret,
        }
    }

    /// A fresh random master key, for writing a new key file.
    pub fn generate() -> MasterKey {
        MasterKey::new(Secret::random())
    }

    /// Parses the configured master key: standard base64 (with or without
    /// padding) of exactly 32 bytes. Surrounding whitespace, such as the
    /// newline at the end of a key file, is ignored. The error never echoes
    /// the input: a near-miss of a real key is still a secret.
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        let text = text.trim().trim_end_matches('=');
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .map_err(|_| KeyError::InvalidMasterKey("it is not base64"))?,
        );
        if decoded.len() != KEY_LEN {
            return Err(KeyError::InvalidMasterKey(
                "it must be the base64 encoding of exactly 32 bytes",
            ));
        }
        Ok(MasterKey::new(Secret::copy_from(&decoded)))
    }

    /// The key as standard base64, to write the generated key file once.
    /// Nothing else should ever need it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.secret.0[..])
    }

    /// Encrypts a data key for storage in the row of `key_id` and `subject`.
    /// Both are bound into the associated data, so a wrapped key copied onto
    /// another row (another id or another subject) no longer unwraps.
    pub fn wrap(&self, key_id: Uuid, subject: &str, key: &DataKey) -> Vec<u8> {
        seal(&self.cipher, &wrap_aad(key_id, subject), &key.0 .0[..])
    }

    /// Decrypts a data key stored in the row of `key_id` and `subject`.
    /// Fails with [`KeyError::Decrypt`] under another master key, for
    /// another row, or when the stored bytes were altered.
    pub fn unwrap(&self, key_id: Uuid, subject: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(KEY_LEN));
        open_into(&self.cipher, &wrap_aad(key_id, subject), wrapped, &mut plain)?;
        if plain.len() != KEY_LEN {
            return Err(KeyError::Decrypt);
        }
        Ok(DataKey(Secret::copy_from(&plain)))
    }
}

/// A data key made for a new key-store row: its id, the key, and the key
/// wrapped for that row.
pub(crate) struct NewKey {
    pub key_id: Uuid,
    pub key: DataKey,
    pub wrapped: Vec<u8>,
}

/// Random bytes a new key needs: the key, the nonce that wraps it, and the
/// random part of its UUID v7.
const NEW_KEY_RANDOM: usize = KEY_LEN + NONCE_LEN + 10;

impl MasterKey {
    /// Fresh keys for new rows of `subjects` (in that order), wrapped for
    /// their rows. The whole batch's randomness comes from one call to the
    /// OS generator: a system call costs about 0.75 µs on our machines, and
    /// one each for the key, the nonce and the id (`Uuid::now_v7` draws its
    /// own) made creating 1,000 keys take 3.2 ms instead of 1.7 ms. Ids are
    /// UUID v7 of the current millisecond with 74 random bits, handed out in
    /// ascending order, so a batch appends to the primary-key index in order.
    pub(crate) fn new_keys(&self, subjects: &[&str]) -> Vec<NewKey> {
        let mut random = Zeroizing::new(vec![0u8; subjects.len() * NEW_KEY_RANDOM]);
        OsRng.fill_bytes(&mut random);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut ids: Vec<Uuid> = random
            .chunks_exact(NEW_KEY_RANDOM)
            .map(|r| {
                let mut id_random = [0u8; 10];
                id_random.copy_from_slice(&r[KEY_LEN + NONCE_LEN..]);
                uuid::Builder::from_unix_timestamp_millis(millis, &id_random).into_uuid()
            })
            .collect();
        ids.sort_unstable();
        subjects
            .iter()
            .zip(ids)
            .zip(random.chunks_exact(NEW_KEY_RANDOM))
            .map(|((subject, key_id), r)| {
                let key = DataKey(Secret::copy_from(&r[..KEY_LEN]));
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&r[KEY_LEN..KEY_LEN + NONCE_LEN]);
                let wrapped = seal_with_nonce(&self.cipher, &nonce, &wrap_aad(key_id, subject), &key.0 .0[..]);
                NewKey { key_id, key, wrapped }
            })
            .collect()
    }
}

/// `WRAP_CONTEXT || key_id (16) || subject`. The subject is the only
/// variable-length part and comes last, so the encoding is unambiguous.
fn wrap_aad(key_id: Uuid, subject: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_CONTEXT.len() + 16 + subject.len());
    aad.extend_from_slice(WRAP_CONTEXT);
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A subject's data key: it encrypts that subject's personal values, and
/// destroying it (in the key store) makes them unreadable for good.
#[derive(Clone)]
pub struct DataKey(Secret);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> DataKey {
        DataKey(Secret::random())
    }

    /// Encrypts and authenticates `plaintext`, binding `aad` (for example
    /// the event id and field name, so a ciphertext cannot be moved to
    /// another event or field). Returns `nonce || ciphertext || tag`, 28
    /// bytes longer than the plaintext.
    ///
    /// # Panics
    ///
    /// Only for a plaintext or `aad` above 64 GiB, the limit of AES-GCM.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.0.cipher(), aad, plaintext)
    }

    /// Checks and decrypts what [`DataKey::seal`] produced with the same
    /// `aad`. Any other key, other associated data or altered byte fails with
    /// [`KeyError::Decrypt`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut out = Vec::with_capacity(sealed.len().saturating_sub(SEAL_OVERHEAD));
        open_into(&self.0.cipher(), aad, sealed, &mut out)?;
        Ok(out)
    }

    /// HMAC-SHA256 under this key over `parts`, each preceded by its length
    /// as 8 bytes big-endian, so the boundaries between parts count:
    /// `["ab", "c"]` and `["a", "bc"]` give different MACs. Used for keyed,
    /// deterministic pseudonyms (stream names, blind indexes) that cannot be
    /// recomputed, or linked back to a value, without the key.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac as _;
        // HMAC pads a key shorter than the hash block with zeros (RFC 2104),
        // so the block-sized constructor over the zero-padded key is exactly
        // HMAC under the 32-byte key, without a fallible length check.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..KEY_LEN].copy_from_slice(&self.0 .0[..]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(hmac::digest::generic_array::GenericArray::from_slice(&block[..]));
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_open_with_the_same_key_and_aad() {
        let key = DataKey::generate();
        for plaintext in [&b""[..], b"Ada Lovelace", &[7u8; 10_000]] {
            let sealed = key.seal(b"event-1/name", plaintext);
            assert_eq!(sealed.len(), plaintext.len() + SEAL_OVERHEAD);
            assert_eq!(key.open(b"event-1/name", &sealed).expect("opens"), plaintext);
        }
        // A clone is the same key.
        let sealed = key.seal(b"", b"x");
        assert_eq!(key.clone().open(b"", &sealed).expect("opens"), b"x");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let key = DataKey::generate();
        assert_ne!(key.seal(b"a", b"same"), key.seal(b"a", b"same"));
    }

    #[test]
    fn any_altered_byte_wrong_aad_or_wrong_key_is_refused() {
        let key = DataKey::generate();
        let sealed = key.seal(b"aad", b"Ada Lovelace");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(key.open(b"aad", &tampered), Err(KeyError::Decrypt), "byte {i}");
        }
        assert_eq!(key.open(b"aaD", &sealed), Err(KeyError::Decrypt));
        assert_eq!(key.open(b"", &sealed), Err(KeyError::Decrypt));
        assert_eq!(DataKey::generate().open(b"aad", &sealed), Err(KeyError::Decrypt));
        // Truncated, down to shorter than nonce and tag.
        assert_eq!(key.open(b"aad", &sealed[..sealed.len() - 1]), Err(KeyError::Decrypt));
        assert_eq!(key.open(b"aad", &sealed[..SEAL_OVERHEAD - 1]), Err(KeyError::Decrypt));
        assert_eq!(key.open(b"aad", &[]), Err(KeyError::Decrypt));
    }

    #[test]
    fn wrapped_keys_unwrap_only_under_the_same_master_key_and_row() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        let id = Uuid::now_v7();
        let wrapped = master.wrap(id, "customer-1", &key);
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let back = master.unwrap(id, "customer-1", &wrapped).expect("unwraps");
        assert_eq!(back.open(b"", &key.seal(b"", b"secret")).expect("same key"), b"secret");

        assert!(matches!(
            MasterKey::generate().unwrap(id, "customer-1", &wrapped),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            master.unwrap(Uuid::now_v7(), "customer-1", &wrapped),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            master.unwrap(id, "customer-2", &wrapped),
            Err(KeyError::Decrypt)
        ));
        let mut tampered = wrapped.clone();
        tampered[20] ^= 0x80;
        assert!(matches!(
            master.unwrap(id, "customer-1", &tampered),
            Err(KeyError::Decrypt)
        ));
    }

    #[test]
    fn batches_of_new_keys_are_distinct_ordered_and_unwrap_for_their_rows() {
        let master = MasterKey::generate();
        let subjects = ["s1", "s2", "s3", "s4"];
        let keys = master.new_keys(&subjects);
        assert_eq!(keys.len(), 4);
        for (i, (new, subject)) in keys.iter().zip(subjects).enumerate() {
            assert_eq!(new.key_id.get_version_num(), 7);
            assert_eq!(new.wrapped.len(), WRAPPED_LEN);
            let back = master.unwrap(new.key_id, subject, &new.wrapped).expect("unwraps");
            assert_eq!(back.open(b"", &new.key.seal(b"", b"v")).expect("same key"), b"v");
            if i > 0 {
                assert!(keys[i - 1].key_id < new.key_id, "ascending ids");
                assert!(
                    keys[i - 1].key.open(b"", &new.key.seal(b"", b"v")).is_err(),
                    "distinct keys"
                );
                assert_ne!(
                    keys[i - 1].wrapped[..NONCE_LEN],
                    new.wrapped[..NONCE_LEN],
                    "distinct nonces"
                );
            }
        }
        assert!(master.new_keys(&[]).is_empty());
    }

    #[test]
    fn a_wrapped_key_is_not_a_sealed_message() {
        // Same master key, same bytes: a sealed message with empty AAD is
        // not accepted as a wrapped key, because wrapping has its own context.
        let master = MasterKey::generate();
        let raw = seal(&master.cipher, b"", &[1u8; KEY_LEN]);
        assert!(master.unwrap(Uuid::nil(), "", &raw).is_err());
    }

    #[test]
    fn master_keys_round_trip_through_base64() {
        let master = MasterKey::generate();
        let text = master.to_base64();
        assert_eq!(text.len(), 44);
        let again = MasterKey::from_base64(&format!("  {text}\n")).expect("parses");
        let key = DataKey::generate();
        let id = Uuid::now_v7();
        assert!(again.unwrap(id, "s", &master.wrap(id, "s", &key)).is_ok());
        // Without padding too.
        assert!(MasterKey::from_base64(text.trim_end_matches('=')).is_ok());
    }

    #[test]
    fn bad_master_keys_are_refused_without_echoing_them() {
        let short = BASE64.encode([9u8; 16]);
        let long = BASE64.encode([9u8; 33]);
        for input in [
            "",
            "not base64 at all!",
            "c2VjcmV0LWtleQ",
            short.as_str(),
            long.as_str(),
        ] {
            let err = MasterKey::from_base64(input).expect_err("refused");
            let message = err.to_string();
            assert!(message.starts_with("the master key is not valid"), "{message}");
            if !input.is_empty() {
                assert!(!message.contains(input), "{message}");
            }
            assert!(!format!("{err:?}").contains(input) || input.is_empty());
        }
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let master = MasterKey::generate();
        assert_eq!(format!("{master:?}"), "MasterKey(<redacted>)");
        assert_eq!(format!("{:?}", DataKey::generate()), "DataKey(<redacted>)");
    }

    #[test]
    fn macs_are_deterministic_keyed_and_respect_part_boundaries() {
        let key = DataKey::generate();
        assert_eq!(key.mac(&[b"ab", b"c"]), key.mac(&[b"ab", b"c"]));
        assert_ne!(key.mac(&[b"ab", b"c"]), key.mac(&[b"a", b"bc"]));
        assert_ne!(key.mac(&[b"abc"]), key.mac(&[b"ab", b"c"]));
        assert_ne!(key.mac(&[b"", b"a"]), key.mac(&[b"a", b""]));
        assert_ne!(key.mac(&[b"a"]), key.mac(&[b"a", b""]));
        assert_ne!(key.mac(&[]), key.mac(&[b""]));
        assert_ne!(key.mac(&[b"ab", b"c"]), DataKey::generate().mac(&[b"ab", b"c"]));
    }

    #[test]
    fn mac_is_standard_hmac_sha256_over_length_prefixed_parts() {
        use hmac::Mac as _;
        let key = DataKey::generate();
        let mut reference = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&key.0 .0[..]).expect("any key length");
        reference.update(&2u64.to_be_bytes());
        reference.update(b"ab");
        reference.update(&1u64.to_be_bytes());
        reference.update(b"c");
        let expected: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(key.mac(&[b"ab", b"c"]), expected);
    }
}
