/*
 * kf-load: create keys over the admin socket, one request at a time, and
 * print each acknowledged Unique Identifier as soon as the answer arrives.
 * The crash test kills the daemon under it; every UID printed is a key the
 * server acknowledged and so must find again after restart.
 *   kf-load --socket PATH --domain NAME [--count N]
 * Exit 0 after N keys, 3 when the connection breaks, 1 on a refusal.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/server.h"
#include "keyfleet/ttlv.h"

static int build_create(kf_arena *a, const char *domain, kf_buf *out)
{
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, hdr, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 2);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, 1);
    kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_CREATE);
    kf_ttlv *p = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv_add_enum(a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *at = kf_ttlv_struct(a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                    (int32_t)(KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT));
    if (!kf_ttlv_add_text(a, at, KMIP_TAG_KEYFLEET_DOMAIN, domain))
        return KF_ERR_NOMEM;
    return kf_ttlv_encode(msg, out);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"domain", required_argument, NULL, 'd'},
                                         {"count", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *sock = NULL, *domain = NULL;
    long count = 1000;
    int c;
    while ((c = getopt_long(argc, argv, "s:d:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': sock = optarg; break;
        case 'd': domain = optarg; break;
        case 'n': count = atol(optarg); break;
        case 'h':
            puts("Usage: kf-load --socket PATH --domain NAME [--count N]\n"
                 "Create N AES-256 keys one by one over keyfleetd's admin socket and print each\n"
                 "acknowledged Unique Identifier. Exit 3 if the connection breaks.");
            return 0;
        default: return 2;
        }
    }
    if (!sock || !domain) {
        fprintf(stderr, "kf-load: --socket and --domain are required (see --help)\n");
        return 2;
    }
    kf_arena *a;
    kf_buf req, resp;
    int fd;
    if (kf_arena_new(&a, 0) < 0 || kf_buf_alloc(&req, 512, 4096, 0) < 0 ||
        kf_buf_alloc(&resp, 512, KF_FRAME_MAX, 0) < 0 || build_create(a, domain, &req) < 0)
        return 1;
    if (kf_client_connect(sock, &fd) < 0)
        return 3;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (long i = 0; i < count; i++) {
        if (kf_client_call(fd, req.data, req.len, &resp) < 0)
            return 3;
        kf_arena *ra;
        kf_ttlv *r;
        if (kf_arena_new(&ra, 0) < 0 || kf_ttlv_decode(resp.data, resp.len, NULL, ra, &r) < 0)
            return 1;
        const kf_ttlv *bi = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
        uint32_t status = 1;
        const char *uid;
        size_t len;
        if (kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status) < 0 || status != 0 ||
            kf_ttlv_get_text(KF_TTLV_PATH(bi, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_UNIQUE_IDENTIFIER),
                             &uid, &len) < 0) {
            fprintf(stderr, "kf-load: create refused\n");
            return 1;
        }
        printf("%.*s\n", (int)len, uid);
        kf_arena_free(ra);
    }
    close(fd);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    kf_arena_free(a);
    return 0;
}
