/*
 * keyfleet's KMIP extensions. KMIP reserves tags 0x540000-0x54FFFF and
 * operation codes with the high bit set (0x8000xxxx) for vendor extensions.
 * KF_EXT_TAG(NameInXml, value, ttlv_type) and KF_EXT_OP(NameInXml, value) are
 * X-macros: the TTLV dictionary includes them so XML and dumps name them.
 * Values are never reused.
 */
#ifndef KF_EXT_TAG
#define KF_EXT_TAG(name, value, type)
#endif
#ifndef KF_EXT_OP
#define KF_EXT_OP(name, value)
#endif

/* Tags */
KF_EXT_TAG(KeyfleetDomain,          0x540001, TextString)  /* domain name */
KF_EXT_TAG(KeyfleetParentDomain,    0x540002, TextString)
KF_EXT_TAG(KeyfleetShare,           0x540003, TextString)  /* one operator share */
KF_EXT_TAG(KeyfleetThreshold,       0x540004, Integer)     /* M */
KF_EXT_TAG(KeyfleetShareCount,      0x540005, Integer)     /* N */
KF_EXT_TAG(KeyfleetSealed,          0x540006, Boolean)
KF_EXT_TAG(KeyfleetInitialised,     0x540007, Boolean)
KF_EXT_TAG(KeyfleetSharesReceived,  0x540008, Integer)
KF_EXT_TAG(KeyfleetBackend,         0x540009, TextString)  /* "soft" | "pkcs11" */
KF_EXT_TAG(KeyfleetDomainInfo,      0x54000A, Structure)
KF_EXT_TAG(KeyfleetKeyId,           0x54000B, LongInteger) /* per-domain monotonic key id */
KF_EXT_TAG(KeyfleetObjectCount,     0x54000C, Integer)
KF_EXT_TAG(KeyfleetAuditRecord,     0x54000D, Structure)
KF_EXT_TAG(KeyfleetAuditSeq,        0x54000E, LongInteger)
KF_EXT_TAG(KeyfleetAuditTime,       0x54000F, DateTimeExtended)
KF_EXT_TAG(KeyfleetAuditActor,      0x540010, TextString)
KF_EXT_TAG(KeyfleetAuditOperation,  0x540011, TextString)
KF_EXT_TAG(KeyfleetAuditObject,     0x540012, TextString)
KF_EXT_TAG(KeyfleetAuditResult,     0x540013, TextString)
KF_EXT_TAG(KeyfleetAuditDetail,     0x540014, TextString)
KF_EXT_TAG(KeyfleetAuditVerdict,    0x540015, Structure)
KF_EXT_TAG(KeyfleetAuditFirstBad,   0x540016, LongInteger)
KF_EXT_TAG(KeyfleetAuditRecords,    0x540017, LongInteger)
KF_EXT_TAG(KeyfleetErrorCode,       0x540018, Integer)     /* kf error code behind a KMIP failure */
KF_EXT_TAG(KeyfleetDevMode,         0x540019, Boolean)
KF_EXT_TAG(KeyfleetPin,             0x54001A, TextString)  /* PKCS#11 user PIN (never logged) */
KF_EXT_TAG(KeyfleetFrom,            0x54001B, LongInteger) /* listing offset / first seq */
KF_EXT_TAG(KeyfleetLimit,           0x54001C, Integer)

/* Operations */
KF_EXT_OP(KeyfleetInit,         0x80000001)
KF_EXT_OP(KeyfleetUnseal,       0x80000002)
KF_EXT_OP(KeyfleetSeal,         0x80000003)
KF_EXT_OP(KeyfleetStatus,       0x80000004)
KF_EXT_OP(KeyfleetDomainCreate, 0x80000005)
KF_EXT_OP(KeyfleetDomainList,   0x80000006)
KF_EXT_OP(KeyfleetAuditShow,    0x80000007)
KF_EXT_OP(KeyfleetAuditVerify,  0x80000008)
KF_EXT_OP(KeyfleetKeyList,      0x80000009)

/* ---- Devices and pairwise KEK distribution (DESIGN §4.1, docs/pairing.md) ----
 * 0x5401xx: the device protocol. These structures are also what devices
 * forward to each other, so libkeyfleet-device encodes and decodes them. */
KF_EXT_TAG(KeyfleetDeviceId,        0x540101, TextString)  /* a device's ID */
KF_EXT_TAG(KeyfleetDeviceIdA,       0x540102, TextString)  /* requester (meter) */
KF_EXT_TAG(KeyfleetDeviceIdB,       0x540103, TextString)  /* partner (base) */
KF_EXT_TAG(KeyfleetProtoVersion,    0x540104, Integer)     /* device protocol version: 1 */
KF_EXT_TAG(KeyfleetKekId,           0x540105, LongInteger) /* server-wide monotonic KEK id */
KF_EXT_TAG(KeyfleetKekCount,        0x540106, Integer)     /* KEKs in one message: 1..8 */
KF_EXT_TAG(KeyfleetPairRole,        0x540107, Enumeration) /* 1 = A (requester), 2 = B (partner) */
KF_EXT_TAG(KeyfleetCounter,         0x540108, LongInteger) /* C_X of a part */
KF_EXT_TAG(KeyfleetNonce,           0x540109, ByteString)  /* 12-byte AEAD nonce */
KF_EXT_TAG(KeyfleetKekValidity,     0x54010A, Structure)   /* NotBefore, NotAfter, MaxUses */
KF_EXT_TAG(KeyfleetNotBefore,       0x54010B, DateTime)
KF_EXT_TAG(KeyfleetNotAfter,        0x54010C, DateTime)
KF_EXT_TAG(KeyfleetMaxUses,         0x54010D, Integer)
KF_EXT_TAG(KeyfleetSealedData,      0x54010E, ByteString)  /* AEAD ciphertext || 16-byte tag */
KF_EXT_TAG(KeyfleetPairHeader,      0x54010F, Structure)   /* associated data of a part */
KF_EXT_TAG(KeyfleetPairPart,        0x540110, Structure)   /* SM_A or SM_B */
KF_EXT_TAG(KeyfleetLifetime,        0x540111, Interval)    /* requested KEK lifetime, seconds */
KF_EXT_TAG(KeyfleetAckBody,         0x540112, Structure)
KF_EXT_TAG(KeyfleetPairAck,         0x540113, Structure)   /* N_A or N_B */
KF_EXT_TAG(KeyfleetAckStatus,       0x540114, Enumeration) /* enum kfd_ack_status */
KF_EXT_TAG(KeyfleetDeviceCounter,   0x540115, LongInteger) /* the device's last accepted counter */
KF_EXT_TAG(KeyfleetMac,             0x540116, ByteString)  /* 16-byte AES-256-CMAC */
KF_EXT_TAG(KeyfleetSessionHeader,   0x540117, Structure)
KF_EXT_TAG(KeyfleetSessionKey,      0x540118, Structure)   /* M3 */
KF_EXT_TAG(KeyfleetSessionAck,      0x540119, Structure)
KF_EXT_TAG(KeyfleetSeq,             0x54011A, LongInteger)
KF_EXT_TAG(KeyfleetSessionRecord,   0x54011B, Structure)   /* application data under SK */
KF_EXT_TAG(KeyfleetDevicePackage,   0x54011C, Structure)   /* installation package (MKEK) */
KF_EXT_TAG(KeyfleetMasterKey,       0x54011D, ByteString)  /* MKEK inside the package only */
KF_EXT_TAG(KeyfleetDeviceState,     0x54011E, Structure)   /* a device's persisted state */
KF_EXT_TAG(KeyfleetKekSlot,         0x54011F, Structure)   /* one held KEK in the device state */
KF_EXT_TAG(KeyfleetUses,            0x540120, Integer)
KF_EXT_TAG(KeyfleetSendSeq,         0x540121, LongInteger)
KF_EXT_TAG(KeyfleetRecvSeq,         0x540122, LongInteger)
KF_EXT_TAG(KeyfleetKeyBytes,        0x540123, ByteString)  /* key inside device state only */
KF_EXT_TAG(KeyfleetExported,        0x540124, Boolean)
KF_EXT_TAG(KeyfleetDeviceInfo,      0x540125, Structure)
KF_EXT_TAG(KeyfleetAcksPending,     0x540126, Integer)

KF_EXT_OP(KeyfleetDeviceRegister,   0x8000000A)
KF_EXT_OP(KeyfleetDeviceExport,     0x8000000B)
KF_EXT_OP(KeyfleetDeviceGet,        0x8000000C)
KF_EXT_OP(KeyfleetPairKeyRequest,   0x8000000D)
KF_EXT_OP(KeyfleetPairAckReport,    0x8000000E)

/* ---- Manufacturing: key installation, registration, tokens (DESIGN §4.2,
 * docs/manufacturing.md). 0x5402xx. */
KF_EXT_TAG(KeyfleetSignedRecord,    0x540201, Structure)   /* envelope: type, body, signer, signature */
KF_EXT_TAG(KeyfleetRecordType,      0x540202, Enumeration) /* enum kf_mfg_record_type */
KF_EXT_TAG(KeyfleetRecordBody,      0x540203, ByteString)  /* TTLV bytes of one KeyfleetMfgRecord */
KF_EXT_TAG(KeyfleetRoleId,          0x540204, TextString)  /* letter + 8 digits: O00000001 */
KF_EXT_TAG(KeyfleetSignature,       0x540205, ByteString)  /* 64-byte Ed25519 */
KF_EXT_TAG(KeyfleetMfgRecord,       0x540206, Structure)
KF_EXT_TAG(KeyfleetRoleType,        0x540207, Enumeration) /* enum kf_mfg_role_type */
KF_EXT_TAG(KeyfleetSignPub,         0x540208, ByteString)  /* Ed25519 public key */
KF_EXT_TAG(KeyfleetEncPub,          0x540209, ByteString)  /* X25519 public key */
KF_EXT_TAG(KeyfleetEventTime,       0x54020A, DateTime)
KF_EXT_TAG(KeyfleetKeyStatus,       0x54020B, Enumeration) /* enum kf_mfg_status */
KF_EXT_TAG(KeyfleetSteelId,         0x54020C, TextString)
KF_EXT_TAG(KeyfleetSealedKey,       0x54020D, ByteString)  /* 80 bytes: key sealed to a role */
KF_EXT_TAG(KeyfleetTestTokens,      0x54020E, ByteString)  /* 8 bytes */
KF_EXT_TAG(KeyfleetMsn,             0x54020F, TextString)  /* manufacturing serial number */
KF_EXT_TAG(KeyfleetReason,          0x540210, Integer)     /* kf error code of a Bad status */
KF_EXT_TAG(KeyfleetArchiveKey,      0x540211, ByteString)  /* 60 bytes: key under Brass's archive key */
KF_EXT_TAG(KeyfleetIndicia,         0x540212, TextString)  /* indicia serial number */
KF_EXT_TAG(KeyfleetCountry,         0x540213, TextString)  /* ISO 3166 alpha-2 */
KF_EXT_TAG(KeyfleetPeriodFirst,     0x540214, Integer)     /* YYYYMM */
KF_EXT_TAG(KeyfleetPeriodLast,      0x540215, Integer)
KF_EXT_TAG(KeyfleetTokenKeyTable,   0x540216, ByteString)  /* n x 116-byte token key entries */
KF_EXT_TAG(KeyfleetRegistration,    0x540217, Structure)   /* MR1 */
KF_EXT_TAG(KeyfleetRegistrationMac, 0x540218, Structure)   /* Domain, KeyfleetKeyId, KeyfleetMac */
KF_EXT_TAG(KeyfleetDate,            0x540219, DateTime)
KF_EXT_TAG(KeyfleetPieces,          0x54021A, ByteString)  /* n x 46 bytes: canonical data || token */
KF_EXT_TAG(KeyfleetVerdicts,        0x54021B, ByteString)  /* n result bytes */
KF_EXT_TAG(KeyfleetDomainKind,      0x54021C, Enumeration) /* 1 vendor, 2 postal, 3 earth */
KF_EXT_TAG(KeyfleetMeterState,      0x54021D, Structure)   /* a postage device's persisted state */
KF_EXT_TAG(KeyfleetMeterSlot,       0x54021E, Structure)   /* one domain master key in it */
KF_EXT_TAG(KeyfleetPieceCount,      0x54021F, LongInteger)
KF_EXT_TAG(KeyfleetMfgKeyInfo,      0x540220, Structure)   /* KeyfleetMfgStatus answer */
KF_EXT_TAG(KeyfleetRequestTime,     0x540221, DateTime)
KF_EXT_TAG(KeyfleetInstallTime,     0x540222, DateTime)
KF_EXT_TAG(KeyfleetInstallVerifyTime, 0x540223, DateTime)
KF_EXT_TAG(KeyfleetRegisterTime,    0x540224, DateTime)
KF_EXT_TAG(KeyfleetRegisterVerifyTime, 0x540225, DateTime)

KF_EXT_OP(KeyfleetMfgSetup,         0x80000010)
KF_EXT_OP(KeyfleetMfgRoleEnroll,    0x80000011)
KF_EXT_OP(KeyfleetMfgRoleCerts,     0x80000012)
KF_EXT_OP(KeyfleetMfgRequestKey,    0x80000013)
KF_EXT_OP(KeyfleetMfgReportInstall, 0x80000014)
KF_EXT_OP(KeyfleetMfgRegister,      0x80000015)
KF_EXT_OP(KeyfleetMfgRetire,        0x80000016)
KF_EXT_OP(KeyfleetMfgStatus,        0x80000017)
KF_EXT_OP(KeyfleetTokenVerify,      0x80000018)
KF_EXT_OP(KeyfleetTokenKeyExport,   0x80000019)
