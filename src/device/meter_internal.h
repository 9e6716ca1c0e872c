/* What the postage-device files of libkeyfleet-device (meter*.c) share: field and date rules. */
#ifndef KFD_METER_INTERNAL_H
#define KFD_METER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/meter.h"

#define KFD_POSTAL_CODE_MAX 10
/* The dates a device works with: 2000-01-01T00:00:00Z <= t < 2100-01-01T00:00:00Z. */
#define KFD_METER_TIME_FIRST INT64_C(946684800)
#define KFD_METER_TIME_END INT64_C(4102444800)

/* n bytes, each from A-Z 0-9 '-' (MSN, indicia number, postal code). */
bool kfd_meter_chars_valid(const char *p, size_t n);
/* A C string of 1..max characters from A-Z 0-9 '-', its NUL within max + 1 bytes. */
bool kfd_meter_field_valid(const char *s, size_t max);
/* Two letters A-Z, then NUL. */
bool kfd_meter_country_valid(const char *s);
/* YYYYMMDD is a real calendar date in 2000..2099. */
bool kfd_meter_date_valid(uint32_t yyyymmdd);
/* t (Unix seconds) lies in 2000..2099. */
bool kfd_meter_time_valid(int64_t t);
/* The UTC calendar date of a t that kfd_meter_time_valid accepts, as YYYYMMDD. */
uint32_t kfd_meter_day_of(int64_t t);

#endif
