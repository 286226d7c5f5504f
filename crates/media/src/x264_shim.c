/* A narrow C face for libx264, so Rust never mirrors x264_param_t's layout: the C compiler reads
 * x264.h, and Rust sees only opaque handles, plain numbers and byte pointers. Settings follow
 * what FFmpeg's libx264 wrapper sets for the same command line (preset, tune, CRF, threads,
 * BT.709 limited range, global headers). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <x264.h>

typedef struct rs_x264 {
    x264_t *enc;
    x264_picture_t pic;
    int width, height;
    int mb_count;  /* macroblocks a picture has: the length of a constant-block map */
    int hints;     /* opened with block hints (x264 frees the maps it is given) */
    int hinted;    /* a hinted picture went in: the cheaper search is on from there */
    x264_param_t skip_search; /* the settings hinted pictures are coded with */
    char error[256];
} rs_x264;

static void rs_log(void *priv, int level, const char *fmt, va_list args) {
    rs_x264 *s = priv;
    if (level <= X264_LOG_ERROR && s) {
        vsnprintf(s->error, sizeof s->error, fmt, args);
    }
}

int rs_x264_build(void) { return X264_BUILD; }

/* Opens an encoder; on failure returns NULL and writes why into `err`. */
rs_x264 *rs_x264_open(int width, int height, int fps, const char *preset, const char *tune, float crf,
                      int threads, int block_hints, char *err, int err_len) {
    rs_x264 *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    x264_param_t p;
    x264_param_default(&p);
    if (x264_param_default_preset(&p, preset, (tune && *tune) ? tune : NULL) < 0) {
        snprintf(err, err_len, "x264 knows no preset %s / tune %s", preset, tune ? tune : "");
        free(s);
        return NULL;
    }
    p.pf_log = rs_log;
    p.p_log_private = s;
    p.i_log_level = X264_LOG_ERROR;
    p.i_csp = X264_CSP_I420;
    p.i_width = width;
    p.i_height = height;
    p.i_fps_num = (uint32_t)fps;
    p.i_fps_den = 1;
    p.i_timebase_num = 1;
    p.i_timebase_den = (uint32_t)fps;
    p.rc.i_rc_method = X264_RC_CRF;
    p.rc.f_rf_constant = crf;
    p.i_threads = threads; /* 0: x264 decides */
    p.b_repeat_headers = 0; /* SPS/PPS go to the MP4's avcC */
    p.b_annexb = 0;         /* NAL units come length-prefixed, as MP4 stores them */
    p.vui.b_fullrange = 0;
    p.vui.i_colorprim = 1; /* BT.709 */
    p.vui.i_transfer = 1;
    p.vui.i_colmatrix = 1;
    /* With hints, pictures may say which macroblocks did not change since the one before
     * (x264's mb_info): those are coded as skips without motion search. Nothing in the
     * stream headers changes, so such segments join with the rest by stream copy. */
    p.analyse.b_mb_info = block_hints ? 1 : 0;
    /* Hinted pictures are the previous one plus a few changed blocks (a caption): full-pel
     * search and SAD decisions for those blocks, and no half-pel planes of the references,
     * which only sub-pel search reads. The first picture (the still itself) keeps the preset's
     * own search. Set per picture, so the stream headers do not change. */
    s->skip_search = p;
    s->skip_search.analyse.i_subpel_refine = 0;
    s->skip_search.analyse.i_me_method = X264_ME_DIA;
    s->enc = x264_encoder_open(&p);
    if (!s->enc) {
        snprintf(err, err_len, "x264 refused its settings: %s", s->error[0] ? s->error : "(no reason given)");
        free(s);
        return NULL;
    }
    x264_picture_init(&s->pic);
    s->pic.img.i_csp = X264_CSP_I420;
    s->pic.img.i_plane = 3;
    s->width = width;
    s->height = height;
    s->mb_count = ((width + 15) / 16) * ((height + 15) / 16);
    s->hints = block_hints;
    return s;
}

/* SPS, PPS and the SEI that names the encoder, each without its 4-byte length. */
int rs_x264_headers(rs_x264 *s, const uint8_t **sps, int *sps_len, const uint8_t **pps, int *pps_len,
                    const uint8_t **sei, int *sei_len) {
    x264_nal_t *nal;
    int n;
    if (x264_encoder_headers(s->enc, &nal, &n) < 0) return -1;
    *sps_len = *pps_len = *sei_len = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *body = nal[i].p_payload + 4;
        int len = nal[i].i_payload - 4;
        switch (nal[i].i_type) {
        case NAL_SPS: *sps = body; *sps_len = len; break;
        case NAL_PPS: *pps = body; *pps_len = len; break;
        case NAL_SEI: *sei = body; *sei_len = len; break;
        default: break;
        }
    }
    return (*sps_len > 0 && *pps_len > 0) ? 0 : -1;
}

/* Encodes one frame (planes non-NULL) or drains one delayed frame (planes NULL). `constant`
 * (NULL, or one byte per macroblock in raster order, non-zero where the block equals the
 * previous picture's) makes the picture a P picture predicted from the one before, its
 * constant blocks skipped; it needs an encoder opened with block hints. Returns the size of
 * the access unit written to `*out` (its NAL units length-prefixed and contiguous), 0 when
 * none came out, or -1 on an error. */
int rs_x264_encode(rs_x264 *s, const uint8_t *y, const uint8_t *u, const uint8_t *v, int64_t pts,
                   const uint8_t *constant, const uint8_t **out, int64_t *out_pts, int64_t *out_dts,
                   int *keyframe) {
    x264_nal_t *nal;
    int n;
    x264_picture_t pic_out;
    x264_picture_t *in = NULL;
    if (y) {
        int chroma = (s->width + 1) / 2;
        s->pic.img.plane[0] = (uint8_t *)y;
        s->pic.img.plane[1] = (uint8_t *)u;
        s->pic.img.plane[2] = (uint8_t *)v;
        s->pic.img.i_stride[0] = s->width;
        s->pic.img.i_stride[1] = chroma;
        s->pic.img.i_stride[2] = chroma;
        s->pic.i_pts = pts;
        s->pic.i_type = X264_TYPE_AUTO;
        s->pic.prop.mb_info = NULL;
        s->pic.prop.mb_info_free = NULL;
        s->pic.param = NULL;
        if (constant && !s->hints) {
            snprintf(s->error, sizeof s->error, "a constant-block map for an encoder opened without hints");
            return -1;
        }
        if (constant) {
            /* x264 keeps the map until it codes the picture (the lookahead holds pictures
             * back), then frees it with the callback. */
            uint8_t *info = malloc((size_t)s->mb_count);
            if (!info) {
                snprintf(s->error, sizeof s->error, "out of memory");
                return -1;
            }
            for (int k = 0; k < s->mb_count; k++) info[k] = constant[k] ? X264_MBINFO_CONSTANT : 0;
            s->pic.prop.mb_info = info;
            s->pic.prop.mb_info_free = free;
            if (!s->hinted) {
                /* x264 applies it when it codes this picture (not when it is given), then frees it. */
                x264_param_t *search = malloc(sizeof *search);
                if (!search) {
                    free(info);
                    s->pic.prop.mb_info = NULL;
                    snprintf(s->error, sizeof s->error, "out of memory");
                    return -1;
                }
                *search = s->skip_search;
                search->param_free = free;
                s->pic.param = search;
                s->hinted = 1;
            }
            /* Skips need the previous picture as the reference: no B pictures in between. */
            s->pic.i_type = X264_TYPE_P;
        }
        in = &s->pic;
    }
    int size = x264_encoder_encode(s->enc, &nal, &n, in, &pic_out);
    if (size < 0) return -1;
    if (size == 0) return 0;
    *out = nal[0].p_payload;
    *out_pts = pic_out.i_pts;
    *out_dts = pic_out.i_dts;
    *keyframe = pic_out.b_keyframe;
    return size;
}

int rs_x264_delayed(rs_x264 *s) { return x264_encoder_delayed_frames(s->enc); }

/* Frames by which decode times trail presentation times (x264's B-frame delay). */
int rs_x264_bframe_delay(rs_x264 *s) {
    x264_param_t p;
    x264_encoder_parameters(s->enc, &p);
    return p.i_bframe ? (p.i_bframe_pyramid ? 2 : 1) : 0;
}

const char *rs_x264_error(rs_x264 *s) { return s->error; }

void rs_x264_close(rs_x264 *s) {
    if (!s) return;
    if (s->enc) x264_encoder_close(s->enc);
    free(s);
}
