/* A narrow C face for libavcodec's AAC encoder, so the soundtrack is encoded in the process
 * (no FFmpeg process start, no pipe) with the very encoder and options the `ffmpeg` command
 * line uses: `-c:a aac -b:a <kbps>k -aac_coder <coder>`. Rust sees an opaque handle, plain
 * numbers and byte pointers; the packets come out raw (Rust writes their ADTS headers). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>

typedef struct rs_aac {
    AVCodecContext *ctx;
    AVFrame *frame;
    AVPacket *pkt;
    int channels;
} rs_aac;

static void describe(int code, const char *what, char *err, int err_len) {
    char msg[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, msg, sizeof msg);
    snprintf(err, err_len, "%s: %s", what, msg);
}

void rs_aac_close(rs_aac *s) {
    if (!s) {
        return;
    }
    av_packet_free(&s->pkt);
    av_frame_free(&s->frame);
    avcodec_free_context(&s->ctx);
    free(s);
}

/* Opens an encoder; on failure returns NULL and writes why into `err`. */
rs_aac *rs_aac_open(int rate, int channels, int bit_rate, const char *coder, char *err, int err_len) {
    /* Failures come back as return codes; libavcodec's own lines (its closing statistics)
     * would only clutter the server's stderr. */
    av_log_set_level(AV_LOG_QUIET);
    const AVCodec *codec = avcodec_find_encoder_by_name("aac");
    if (!codec) {
        snprintf(err, err_len, "this libavcodec has no aac encoder");
        return NULL;
    }
    rs_aac *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->channels = channels;
    s->ctx = avcodec_alloc_context3(codec);
    s->frame = av_frame_alloc();
    s->pkt = av_packet_alloc();
    if (!s->ctx || !s->frame || !s->pkt) {
        snprintf(err, err_len, "out of memory");
        rs_aac_close(s);
        return NULL;
    }
    s->ctx->sample_fmt = AV_SAMPLE_FMT_FLTP;
    s->ctx->sample_rate = rate;
    s->ctx->bit_rate = bit_rate;
    s->ctx->time_base = (AVRational){1, rate};
    av_channel_layout_default(&s->ctx->ch_layout, channels);
    int r = av_opt_set(s->ctx->priv_data, "aac_coder", coder, 0);
    if (r < 0) {
        describe(r, "aac_coder", err, err_len);
        rs_aac_close(s);
        return NULL;
    }
    r = avcodec_open2(s->ctx, codec, NULL);
    if (r < 0) {
        describe(r, "opening the AAC encoder", err, err_len);
        rs_aac_close(s);
        return NULL;
    }
    s->frame->format = AV_SAMPLE_FMT_FLTP;
    s->frame->sample_rate = rate;
    s->frame->nb_samples = s->ctx->frame_size;
    r = av_channel_layout_copy(&s->frame->ch_layout, &s->ctx->ch_layout);
    if (r >= 0) {
        r = av_frame_get_buffer(s->frame, 0);
    }
    if (r < 0) {
        describe(r, "allocating an audio frame", err, err_len);
        rs_aac_close(s);
        return NULL;
    }
    return s;
}

/* Samples per frame the encoder takes (1024 for AAC-LC). */
int rs_aac_frame_size(const rs_aac *s) { return s->ctx->frame_size; }

/* Sends one frame of `frame_size` interleaved samples at `pts`, or flushes when `samples` is
 * NULL. Returns 0, or a negative AVERROR (its text in `err`). */
int rs_aac_send(rs_aac *s, const float *samples, int64_t pts, char *err, int err_len) {
    int r;
    if (!samples) {
        r = avcodec_send_frame(s->ctx, NULL);
    } else {
        r = av_frame_make_writable(s->frame);
        if (r >= 0) {
            int n = s->frame->nb_samples;
            for (int c = 0; c < s->channels; c++) {
                float *plane = (float *)s->frame->extended_data[c];
                for (int i = 0; i < n; i++) {
                    plane[i] = samples[i * s->channels + c];
                }
            }
            s->frame->pts = pts;
            r = avcodec_send_frame(s->ctx, s->frame);
        }
    }
    if (r < 0) {
        describe(r, "encoding AAC", err, err_len);
    }
    return r;
}

/* Takes the next packet: 1 with `data`/`size` set (valid until the next call), 0 when the
 * encoder needs more input, -1 when a flush is complete, or another negative AVERROR. */
int rs_aac_receive(rs_aac *s, const uint8_t **data, int *size, char *err, int err_len) {
    av_packet_unref(s->pkt);
    int r = avcodec_receive_packet(s->ctx, s->pkt);
    if (r == AVERROR(EAGAIN)) {
        return 0;
    }
    if (r == AVERROR_EOF) {
        return -1;
    }
    if (r < 0) {
        describe(r, "encoding AAC", err, err_len);
        return r < -1 ? r : -2;
    }
    *data = s->pkt->data;
    *size = s->pkt->size;
    return 1;
}
