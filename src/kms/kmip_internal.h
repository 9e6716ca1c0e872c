/* The KMIP front door's pieces: one handler per operation. */
#ifndef KF_KMIP_INTERNAL_H
#define KF_KMIP_INTERNAL_H

#include "keyfleet/ttlv.h"
#include "kms_internal.h"

/* What a handler gets: the request payload and a response payload to fill. */
struct kmip_call {
    kf_kms *kms;
    const struct kf_principal *who;
    const char *actor;       /* who->name */
    int major, minor;        /* protocol version of the request */
    const kf_ttlv *req;      /* Request Payload (may be NULL) */
    kf_ttlv *resp;           /* Response Payload, already created */
    kf_arena *arena;
    char message[256];       /* optional extra sentence for a failure */
};

typedef int (*kmip_handler)(struct kmip_call *c);

/* Standard operations (kmip_objects.c). */
int kmip_create(struct kmip_call *c);
int kmip_get(struct kmip_call *c);
int kmip_get_attributes(struct kmip_call *c);
int kmip_activate(struct kmip_call *c);
int kmip_revoke(struct kmip_call *c);
int kmip_destroy(struct kmip_call *c);
int kmip_discover_versions(struct kmip_call *c);
int kmip_query(struct kmip_call *c);
/* keyfleet extension operations (kmip_admin.c). */
int kmip_kf_init(struct kmip_call *c);
int kmip_kf_unseal(struct kmip_call *c);
int kmip_kf_seal(struct kmip_call *c);
int kmip_kf_status(struct kmip_call *c);
int kmip_kf_domain_create(struct kmip_call *c);
int kmip_kf_domain_list(struct kmip_call *c);
int kmip_kf_key_list(struct kmip_call *c);
int kmip_kf_audit_show(struct kmip_call *c);
int kmip_kf_audit_verify(struct kmip_call *c);

/*
 * KF_OK if c->who holds roles in domain (NULL: server-wide); otherwise audits
 * the refusal of op and returns KF_ERR_PERM with a sentence in c->message.
 */
int kmip_authorize(struct kmip_call *c, unsigned roles, const char *domain, const char *op);
/* Same, for the domain of a Unique Identifier (unknown UIDs pass to the service's not-found). */
int kmip_authorize_uid(struct kmip_call *c, unsigned roles, const char *uid, const char *op);

/* Text field of the payload as a NUL-terminated arena string, or NULL. */
const char *kmip_text(struct kmip_call *c, const kf_ttlv *parent, uint32_t tag);
/* The object's attributes, KMIP 2.x "Attributes" form, appended to parent. */
int kmip_put_attributes_v2(kf_arena *a, kf_ttlv *parent, const struct kf_object *obj,
                           const char *uid);

#endif
