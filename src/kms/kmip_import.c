/*
 * KMIP 2.x Import (KMIP 2.1 §6.1.28): Unique Identifier, Object Type,
 * [Replace Existing], [Key Wrap Type], [Attributes], and the object as in
 * Register.
 *
 * keyfleet's identifiers are "<domain>/<key id>" with key IDs assigned by the
 * server per domain, increasing and never reused (store.h, seed 003). A
 * client-chosen identifier therefore only fits in two cases:
 *   - Replace Existing is true and the object exists (and is not Destroyed):
 *     its material and attributes are replaced (kf_kms_replace_material,
 *     which re-wraps with version + 1 so the wrapping's binding changes);
 *   - the object does not exist and its key ID is exactly the domain's next
 *     one: it is registered normally and the service checks, in the same
 *     transaction, that this is the ID it assigns.
 * Every other identifier is refused: an existing object without Replace
 * Existing (Object Already Exists), a Destroyed one (its ID stays retired),
 * a free ID at or below the domain's high-water mark or past the next one
 * ("keyfleet assigns identifiers; use Register"). The identifier must parse
 * and name a domain the caller may MANAGE. KMIP 1.x has no Import: Operation
 * Not Supported.
 */
#include <stdio.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "kmip_internal.h"

static int parse_import_uid(struct kmip_call *c, struct kmip_import *im)
{
    im->uid = kmip_text(c, c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (!im->uid) {
        snprintf(c->message, sizeof(c->message), "Import needs a Unique Identifier");
        return KF_ERR_REQUEST;
    }
    if (kf_object_uid_parse(im->uid, im->domain, &im->key_id) != KF_OK || im->key_id == 0) {
        snprintf(c->message, sizeof(c->message),
                 "keyfleet Unique Identifiers are <domain>/<key id>");
        return KF_ERR_ATTRIBUTE;
    }
    return KF_OK;
}

static int parse_import_flags(struct kmip_call *c, struct kmip_import *im)
{
    const kf_ttlv *n = kf_ttlv_find(c->req, KMIP_TAG_REPLACE_EXISTING);
    im->replace = false;
    if (n)
        KF_GUARD(kf_ttlv_get_bool(n, &im->replace));
    uint32_t kwt = KMIP_KEY_WRAP_TYPE_NOT_WRAPPED;
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_KEY_WRAP_TYPE)))
        KF_GUARD(kf_ttlv_get_enum(n, &kwt));
    /* Wrapped key blocks are refused when the object is read (as in Register). */
    if (kwt != KMIP_KEY_WRAP_TYPE_NOT_WRAPPED && kwt != KMIP_KEY_WRAP_TYPE_AS_REGISTERED) {
        snprintf(c->message, sizeof(c->message), "Key Wrap Type is Not Wrapped or As Registered");
        return KF_ERR_ATTRIBUTE;
    }
    return KF_OK;
}

/* KF_OK: exists (*found true) or not (*found false); else the lookup's error. */
static int import_target_exists(struct kmip_call *c, const char *uid, bool *found)
{
    struct kf_object obj = {0};
    int rc = kf_kms_get(c->kms, c->actor, uid, &obj, NULL);
    kf_object_clear(&obj);
    *found = rc == KF_OK;
    return rc == KF_ERR_OBJECT ? KF_OK : rc;
}

int kmip_import(struct kmip_call *c)
{
    if (c->major < 2) {
        snprintf(c->message, sizeof(c->message), "Import is a KMIP 2.x operation: use Register");
        return KF_ERR_OPERATION;
    }
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    struct kmip_import im = {0};
    KF_GUARD(parse_import_uid(c, &im));
    KF_GUARD(parse_import_flags(c, &im));
    KF_GUARD(kmip_authorize(c, KF_ROLE_MANAGE, im.domain, "Import"));
    bool found;
    KF_GUARD(import_target_exists(c, im.uid, &found));
    if (found && !im.replace) {
        snprintf(c->message, sizeof(c->message),
                 "the object exists: set Replace Existing to replace it");
        return KF_ERR_EXISTS;
    }
    im.replace = found;
    c->import = &im;
    int rc = found ? kmip_register(c) : kmip_attrs_register(c);
    c->import = NULL;
    if (rc == KF_ERR_EXISTS && !found)
        snprintf(c->message, sizeof(c->message),
                 "keyfleet assigns identifiers; use Register");
    if (rc == KF_ERR_STATE && found)
        snprintf(c->message, sizeof(c->message),
                 "a Destroyed object keeps its identifier retired; use Register");
    return rc;
}
