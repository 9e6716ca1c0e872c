/*
 * kf-ttlv: look at and convert KMIP TTLV messages.
 *   kf-ttlv dump FILE.bin            human-readable tree
 *   kf-ttlv bin2xml FILE.bin         KMIP XML on stdout
 *   kf-ttlv xml2bin FILE.xml OUTDIR  each message of a test-case file as OUTDIR/<name>-<n>.bin
 *                                    (also how the fuzzer's seed corpus is made)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keyfleet/error.h"
#include "keyfleet/ttlv.h"

#define MAX_FILE ((size_t)16 * 1024 * 1024)

static void usage(FILE *f)
{
    fputs("usage: kf-ttlv dump FILE.bin\n"
          "       kf-ttlv bin2xml FILE.bin\n"
          "       kf-ttlv xml2bin FILE.xml OUTDIR\n"
          "       kf-ttlv --help\n"
          "dump and bin2xml read one binary TTLV message; xml2bin writes every message of a\n"
          "KMIP XML file (<KMIP> wrapper or a single message) to OUTDIR/<file>-<n>.bin.\n",
          f);
}

static int read_file(const char *path, kf_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kf-ttlv: %s: %s\n", path, strerror(errno));
        return KF_ERR_IO;
    }
    int rc = kf_buf_alloc(b, 0, MAX_FILE, 0);
    while (rc == KF_OK) {
        uint8_t chunk[4096];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n == 0)
            break;
        rc = kf_buf_put_bytes(b, chunk, n);
    }
    if (rc == KF_OK && ferror(f))
        rc = KF_ERR_IO;
    fclose(f);
    if (rc < 0)
        fprintf(stderr, "kf-ttlv: %s: %s\n", path, kf_strerror(rc));
    return rc;
}

static int write_file(const char *path, const kf_buf *b)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "kf-ttlv: %s: %s\n", path, strerror(errno));
        return KF_ERR_IO;
    }
    size_t n = fwrite(b->data, 1, b->len, f);
    if (fclose(f) != 0 || n != b->len) {
        fprintf(stderr, "kf-ttlv: %s: write failed\n", path);
        return KF_ERR_IO;
    }
    return KF_OK;
}

/* dump or bin2xml */
static int show_binary(const char *path, bool xml)
{
    kf_buf in = {0}, out = {0};
    kf_arena *a = NULL;
    kf_ttlv *root;
    int rc = read_file(path, &in);
    if (rc == KF_OK)
        rc = kf_arena_new(&a, 0);
    if (rc == KF_OK) {
        struct kf_ttlv_limits lim = {.max_total = MAX_FILE, .max_item_len = MAX_FILE};
        rc = kf_ttlv_decode(in.data, in.len, &lim, a, &root);
        if (rc < 0)
            fprintf(stderr, "kf-ttlv: %s: %s (%s)\n", path, kf_strerror(rc), kf_errname(rc));
    }
    if (rc == KF_OK)
        rc = kf_buf_alloc(&out, 0, 8 * MAX_FILE, 0);
    if (rc == KF_OK)
        rc = xml ? kf_ttlv_to_xml(root, &out) : kf_ttlv_dump(root, &out);
    if (rc == KF_OK)
        fwrite(out.data, 1, out.len, stdout);
    kf_buf_free(&in);
    kf_buf_free(&out);
    kf_arena_free(a);
    return rc;
}

static const char *base_name(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    snprintf(buf, size, "%s", slash ? slash + 1 : path);
    char *dot = strrchr(buf, '.');
    if (dot)
        *dot = '\0';
    return buf;
}

static int xml_to_binaries(const char *path, const char *outdir)
{
    kf_buf in = {0}, out = {0};
    kf_arena *a = NULL;
    kf_ttlv *msg = NULL;
    size_t count = 0;
    int rc = read_file(path, &in);
    if (rc == KF_OK)
        rc = kf_arena_new(&a, 0);
    if (rc == KF_OK) {
        struct kf_ttlv_limits lim = {.max_total = MAX_FILE};
        struct kf_ttlv_xml_opts opts = {.lim = &lim, .now = 0};
        rc = kf_ttlv_from_xml_messages((const char *)in.data, in.len, &opts, a, &msg, &count);
        if (rc < 0)
            fprintf(stderr, "kf-ttlv: %s: %s (%s)\n", path, kf_strerror(rc), kf_errname(rc));
    }
    if (rc == KF_OK)
        rc = kf_buf_alloc(&out, 0, MAX_FILE, 0);
    char base[256], file[1024];
    base_name(path, base, sizeof(base));
    for (size_t i = 0; rc == KF_OK && msg; msg = msg->next, i++) {
        kf_buf_reset(&out);
        rc = kf_ttlv_encode(msg, &out);
        snprintf(file, sizeof(file), "%s/%s-%02zu.bin", outdir, base, i);
        if (rc == KF_OK)
            rc = write_file(file, &out);
    }
    if (rc == KF_OK)
        fprintf(stderr, "kf-ttlv: %s: %zu messages written to %s\n", path, count, outdir);
    kf_buf_free(&in);
    kf_buf_free(&out);
    kf_arena_free(a);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    int rc;
    if (argc == 3 && strcmp(argv[1], "dump") == 0)
        rc = show_binary(argv[2], false);
    else if (argc == 3 && strcmp(argv[1], "bin2xml") == 0)
        rc = show_binary(argv[2], true);
    else if (argc == 4 && strcmp(argv[1], "xml2bin") == 0)
        rc = xml_to_binaries(argv[2], argv[3]);
    else {
        usage(stderr);
        return 2;
    }
    return rc < 0 ? 1 : 0;
}
