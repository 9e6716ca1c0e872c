/*
 * Every refusal keyfleet can give, as KF_ERROR(NAME, value, sentence).
 * Values are negative and never reused; a sentence says what was wrong and,
 * where it helps, what to do. Nothing secret ever goes into a sentence.
 * Ranges: 1-99 core, 100-199 crypto/rng, 200-299 ttlv, 300-399 secmod,
 * 400-499 store, 500-599 audit, 600-699 kms/service, 700-799 server/cli.
 */
/* core */
KF_ERROR(KF_ERR_NOMEM,        -1,  "out of memory")
KF_ERROR(KF_ERR_ARG,          -2,  "invalid argument")
KF_ERROR(KF_ERR_SHORT,        -3,  "input ends before the item it announces is complete")
KF_ERROR(KF_ERR_LIMIT,        -4,  "input exceeds a configured size limit")
KF_ERROR(KF_ERR_IO,           -5,  "input/output error (see the log for the file and system error)")
KF_ERROR(KF_ERR_NOSPACE,      -6,  "output buffer is too small")
KF_ERROR(KF_ERR_INTERNAL,     -7,  "internal error: an invariant did not hold")
KF_ERROR(KF_ERR_NOT_FOUND,    -8,  "no such item")
KF_ERROR(KF_ERR_EXISTS,       -9,  "the item already exists")
KF_ERROR(KF_ERR_PERM,         -10, "permission denied")
KF_ERROR(KF_ERR_UNSUPPORTED,  -11, "operation or algorithm not supported")
KF_ERROR(KF_ERR_SECMEM,       -12, "cannot lock secure memory (raise RLIMIT_MEMLOCK)")
KF_ERROR(KF_ERR_FORMAT,       -13, "malformed input")
KF_ERROR(KF_ERR_TIMEOUT,      -14, "timed out")
/* crypto / rng */
KF_ERROR(KF_ERR_CRYPTO,       -100, "cryptographic operation failed")
KF_ERROR(KF_ERR_AUTH,         -101, "integrity check failed: data was modified, moved or the wrong key was used")
KF_ERROR(KF_ERR_KEY_SIZE,     -102, "key has a length this algorithm does not accept")
KF_ERROR(KF_ERR_BAD_SIGNATURE,-103, "signature does not verify")
KF_ERROR(KF_ERR_RNG_HEALTH,   -110, "random source failed its health test; key generation is refused until it recovers")
KF_ERROR(KF_ERR_RNG_SOURCE,   -111, "random source could not be read")
/* ttlv */
KF_ERROR(KF_ERR_TTLV_TYPE,    -200, "TTLV item has an unknown or wrong type")
KF_ERROR(KF_ERR_TTLV_LENGTH,  -201, "TTLV item has a length its type does not allow")
KF_ERROR(KF_ERR_TTLV_DEPTH,   -202, "TTLV structure nests deeper than the limit")
KF_ERROR(KF_ERR_TTLV_COUNT,   -203, "TTLV message has more items than the limit")
KF_ERROR(KF_ERR_TTLV_PADDING, -204, "TTLV padding bytes are not zero")
KF_ERROR(KF_ERR_TTLV_TAG,     -205, "unknown KMIP tag name")
KF_ERROR(KF_ERR_TTLV_XML,     -206, "KMIP XML is malformed")
KF_ERROR(KF_ERR_TTLV_ENUM,    -207, "unknown KMIP enumeration value name")
KF_ERROR(KF_ERR_TTLV_MISSING, -208, "a required TTLV field is missing")
KF_ERROR(KF_ERR_TTLV_TOTAL,   -209, "TTLV message is longer than the configured limit")
KF_ERROR(KF_ERR_TTLV_ITEM_LEN,-210, "TTLV item declares a length above the configured limit")
KF_ERROR(KF_ERR_TTLV_TRAILING,-211, "bytes follow the end of the TTLV message")
KF_ERROR(KF_ERR_TTLV_VALUE,   -212, "TTLV item has a value its type does not allow (Boolean must be 0 or 1)")
KF_ERROR(KF_ERR_TTLV_UTF8,    -213, "TTLV Text String is not valid UTF-8")
/* secmod */
KF_ERROR(KF_ERR_SEALED,       -300, "the security module is sealed: unseal it with the operator shares (keyfleet unseal)")
KF_ERROR(KF_ERR_NOT_INIT,     -301, "the security module is not initialised: run keyfleet init")
KF_ERROR(KF_ERR_ALREADY_INIT, -302, "the security module is already initialised")
KF_ERROR(KF_ERR_SHARE,        -303, "operator share is malformed or does not belong to this key")
KF_ERROR(KF_ERR_SHARES_WRONG, -304, "the shares given do not rebuild the root key: check that each comes from a different custodian of this server")
KF_ERROR(KF_ERR_THRESHOLD,    -305, "threshold must satisfy 2 <= M <= N <= 255 (or M = N = 1)")
KF_ERROR(KF_ERR_PKCS11,       -306, "the PKCS#11 token refused the operation (see the log for the CKR code)")
KF_ERROR(KF_ERR_PIN,          -307, "the PKCS#11 token refused the PIN")
KF_ERROR(KF_ERR_ALREADY_UNSEALED, -308, "the security module is already unsealed")
/* store */
KF_ERROR(KF_ERR_DB,           -400, "database error (see the log)")
KF_ERROR(KF_ERR_SCHEMA,       -401, "database schema is newer than this program: upgrade keyfleet")
KF_ERROR(KF_ERR_STATE,        -402, "the object's state does not allow this operation")
KF_ERROR(KF_ERR_TRANSITION,   -403, "this state transition is not allowed by the KMIP state machine")
KF_ERROR(KF_ERR_DOMAIN,       -404, "no such domain")
KF_ERROR(KF_ERR_DOMAIN_CROSS, -405, "the object belongs to another domain; no operation crosses domains")
KF_ERROR(KF_ERR_OBJECT,       -406, "no such managed object")
KF_ERROR(KF_ERR_NAME,         -407, "name is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -")
/* audit */
KF_ERROR(KF_ERR_AUDIT_WRITE,  -500, "the audit record could not be written, so the operation was not performed")
KF_ERROR(KF_ERR_AUDIT_CHAIN,  -501, "audit trail is broken: a record was modified, removed, reordered or truncated")
KF_ERROR(KF_ERR_AUDIT_MAC,    -502, "audit checkpoint MAC does not verify")
KF_ERROR(KF_ERR_AUDIT_TIME,   -503, "audit timestamps do not strictly increase")
/* kms */
KF_ERROR(KF_ERR_REQUEST,      -600, "request is malformed or missing a required field")
KF_ERROR(KF_ERR_OPERATION,    -601, "operation not supported")
KF_ERROR(KF_ERR_ATTRIBUTE,    -602, "attribute is invalid for this object")
KF_ERROR(KF_ERR_EXPORT,       -603, "key material of this object may not be exported")
/* server / cli */
KF_ERROR(KF_ERR_CONNECT,      -700, "cannot connect to keyfleetd: is it running, and is --socket right?")
KF_ERROR(KF_ERR_PEER,         -701, "peer credentials refused: the admin socket accepts root and the daemon's own user only")
KF_ERROR(KF_ERR_PROTOCOL,     -702, "unexpected message on the admin socket")
KF_ERROR(KF_ERR_USAGE,        -703, "wrong usage: see --help")
