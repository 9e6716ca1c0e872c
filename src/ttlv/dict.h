/* Internal: the generated dictionary tables (src/ttlv/dict_gen.c). */
#ifndef KF_TTLV_DICT_H
#define KF_TTLV_DICT_H

#include <stddef.h>
#include <stdint.h>

struct kf_dict_value {
    uint32_t value;
    const char *name; /* KMIP XML name */
    uint8_t primary;  /* 1 for the name to print; 0 for an older alias */
};

struct kf_dict_enum {
    const char *title; /* spec title, "Cryptographic Algorithm" */
    const struct kf_dict_value *values; /* sorted by value, NULL-terminated */
    int count;
    uint8_t is_mask; /* values are bits of an Integer mask */
};

struct kf_dict_tag {
    uint32_t tag;
    uint8_t type;    /* 0 = varies or unknown */
    int16_t enum_id; /* index into kf_dict_enums, -1 = none */
    const char *name;
    uint8_t primary;
};

extern const struct kf_dict_enum kf_dict_enums[];
extern const size_t kf_dict_enum_count;
extern const struct kf_dict_tag kf_dict_tags[]; /* sorted by tag */
extern const size_t kf_dict_tag_count;

#endif
