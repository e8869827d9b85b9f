/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI (RFC 3720) and
 * ext4: the checksum of revocation files.
 *
 * The SSE4.2 crc32 instruction computes exactly this CRC; it is used when the CPU
 * has it (checked at run time, so one build runs everywhere), otherwise a
 * slice-by-8 table implementation.  Both take and return the finished CRC value,
 * so a checksum can be extended piece by piece:
 *     esc_crc32c(esc_crc32c(0, a, na), b, nb) == esc_crc32c(0, a || b, na + nb)
 */
#ifndef ESC_CRC32C_H
#define ESC_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t esc_crc32c(uint32_t crc, const void *data, size_t len);

/* The table implementation alone, and whether the hardware one is in use (tests). */
uint32_t esc_crc32c_sw(uint32_t crc, const void *data, size_t len);
int esc_crc32c_hw_available(void);

#endif
