/*
 * naive.c -- the lecture's naive TCP handshake responder (tcp-raw-responder.c), written again
 * from the lecture notes for tcplab's grading tests.  It falls far short of TCP, on purpose:
 *
 *   - it reads every TCP packet on a raw socket and answers a copy of it, with the IP addresses
 *     and the ports swapped ("copy and swap"): the client's own options and window come back;
 *   - a SYN to port 80 gets a SYN+ACK with the ISN 0xaaaabbbb, acking the SYN's seq + 1;
 *   - the ACK that completes the handshake gets the three lines, one segment each;
 *   - data is echoed back, not acknowledged (the lecture: "that data will not be ACK-ed");
 *   - a FIN is ACKed, but no FIN is ever sent: the connection is left half-open.
 *
 * Checksums are computed the lecture's way: the bytes the TCP checksum covers, pseudo-header
 * included, are copied into a buffer first.  Build: gcc -O2 -Wall -o responder naive.c
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PORT 80
#define ISN 0xaaaabbbbu
#define MAX_SERVED 64

static const char *lines[] = {
    "Hello TCP\n",
    "Great to meet you!\n",
    "Nice weather we are having, but they say it will rain on Monday.\n",
};

static uint16_t checksum(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1)
        sum += (uint32_t)(p[len - 1] << 8);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return htons((uint16_t)~sum);
}

static uint16_t tcp_checksum(const struct iphdr *ip, const uint8_t *tcp, size_t tcp_len)
{
    static uint8_t buf[12 + 65536];          /* pseudo-header, then the segment */
    memcpy(buf, &ip->saddr, 4);
    memcpy(buf + 4, &ip->daddr, 4);
    buf[8] = 0;
    buf[9] = IPPROTO_TCP;
    buf[10] = (uint8_t)(tcp_len >> 8);
    buf[11] = (uint8_t)tcp_len;
    memcpy(buf + 12, tcp, tcp_len);
    return checksum(buf, 12 + tcp_len);
}

/* Copy the received packet's headers, swap addresses and ports, set seq/ack/flags, append
 * the payload, fix the lengths and checksums, and send it. */
static void answer(int fd, const uint8_t *pkt, uint32_t seq, uint32_t ack, uint8_t flags,
                   const void *payload, size_t payload_len)
{
    uint8_t out[1600];
    const struct iphdr *in_ip = (const void *)pkt;
    size_t ihl = in_ip->ihl * 4u;
    const struct tcphdr *in_tcp = (const void *)(pkt + ihl);
    size_t hdr = ihl + in_tcp->doff * 4u;
    if (hdr + payload_len > sizeof out)
        return;
    memcpy(out, pkt, hdr);
    memcpy(out + hdr, payload, payload_len);
    struct iphdr *ip = (void *)out;
    struct tcphdr *tcp = (void *)(out + ihl);
    ip->saddr = in_ip->daddr;
    ip->daddr = in_ip->saddr;
    ip->tot_len = htons((uint16_t)(hdr + payload_len));
    ip->check = 0;
    ip->check = checksum(out, ihl);
    tcp->source = in_tcp->dest;
    tcp->dest = in_tcp->source;
    tcp->seq = htonl(seq);
    tcp->ack_seq = htonl(ack);
    ((uint8_t *)tcp)[13] = flags;
    tcp->check = 0;
    tcp->check = tcp_checksum(ip, (uint8_t *)tcp, hdr - ihl + payload_len);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = ip->daddr};
    if (sendto(fd, out, hdr + payload_len, 0, (struct sockaddr *)&to, sizeof to) < 0)
        perror("sendto");
}

int main(void)
{
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
    int on = 1;
    if (fd < 0 || setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &on, sizeof on) < 0) {
        perror("raw socket (run as root, or with CAP_NET_RAW)");
        return 2;
    }
    struct { uint32_t addr; uint16_t port; } served[MAX_SERVED];
    int nserved = 0;
    uint8_t pkt[65536];
    for (;;) {
        ssize_t n = recv(fd, pkt, sizeof pkt, 0);
        if (n < (ssize_t)sizeof(struct iphdr))
            continue;
        const struct iphdr *ip = (const void *)pkt;
        size_t ihl = ip->ihl * 4u;
        if ((size_t)n < ihl + sizeof(struct tcphdr))
            continue;
        const struct tcphdr *tcp = (const void *)(pkt + ihl);
        size_t hdr = ihl + tcp->doff * 4u;
        if (ntohs(tcp->dest) != PORT || tcp->rst || hdr > (size_t)n)
            continue;
        uint32_t seq = ntohl(tcp->seq), ack = ntohl(tcp->ack_seq);
        size_t len = (size_t)n - hdr;
        if (tcp->syn && !tcp->ack) {
            answer(fd, pkt, ISN, seq + 1, 0x12, "", 0);              /* SYN+ACK */
        } else if (tcp->ack && tcp->fin) {
            answer(fd, pkt, ack, seq + len + 1, 0x10, "", 0);        /* ACK the FIN */
        } else if (tcp->ack && len > 0) {
            answer(fd, pkt, ack, seq, tcp->psh ? 0x18 : 0x10, pkt + hdr, len);  /* echo */
        } else if (tcp->ack && ack == ISN + 1) {
            int known = 0;
            for (int i = 0; i < nserved; i++)
                known |= served[i].addr == ip->saddr && served[i].port == tcp->source;
            if (known)
                continue;
            if (nserved < MAX_SERVED) {
                served[nserved].addr = ip->saddr;
                served[nserved].port = tcp->source;
                nserved++;
            }
            uint32_t s = ack;
            for (int i = 0; i < 3; i++) {                          /* the three lines, \0 too */
                size_t l = strlen(lines[i]) + 1;
                answer(fd, pkt, s, seq, 0x10, lines[i], l);
                s += (uint32_t)l;
            }
        }
    }
}
