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
