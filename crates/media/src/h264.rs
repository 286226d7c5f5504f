//! Just enough H.264 syntax to write a picture that repeats the one before it, without an
//! encoder: a non-reference P slice whose macroblocks are all skipped (a decoder copies its
//! reference), and the picture-order counts of an encoder's own pictures set to where they sit
//! among such repeats. A still scene's unchanged frames then cost a few bytes of arithmetic
//! instead of a run of x264's lookahead, analysis and reconstruction each.
//!
//! Only the stream layouts x264 writes for progressive 4:2:0 video are taken (picture order
//! count type 0, one slice group, no scaling matrices in the SPS); [`StreamParams::parse`]
//! answers `None` for anything else and the caller keeps encoding every picture.

/// What a slice header needs from the SPS and PPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamParams {
    log2_max_frame_num: u32,
    log2_max_poc_lsb: u32,
    bottom_field_pic_order: bool,
    cabac: bool,
    num_ref_idx_l0_default: u32,
    weighted_pred: bool,
    chroma: bool,
    deblocking_control: bool,
    redundant_pic_cnt: bool,
    macroblocks: u32,
    /// With CABAC, a repeat's slice data (every macroblock skipped, after the header's
    /// alignment): the same bytes in every repeat, so coded once.
    skipped_slice_data: Vec<u8>,
}

/// Why an encoder's picture could not be placed among repeats.
#[derive(Debug, thiserror::Error)]
#[error("h264: {0}")]
pub struct SyntaxError(&'static str);

impl StreamParams {
    /// Reads the fields slice headers depend on from an SPS and a PPS (NAL units without length
    /// or start code); `None` for a layout this module does not write.
    pub fn parse(sps: &[u8], pps: &[u8]) -> Option<Self> {
        let sps = unescape(sps.get(1..)?);
        let mut r = BitReader::new(&sps);
        let profile = r.u(8)?;
        r.u(16)?; // constraint flags, level
        r.ue()?; // seq_parameter_set_id
        let mut chroma_format = 1;
        if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
            chroma_format = r.ue()?;
            if chroma_format == 3 {
                r.u(1)?;
            }
            r.ue()?; // bit depths
            r.ue()?;
            r.u(1)?; // qpprime_y_zero_transform_bypass
            if r.u(1)? != 0 {
                return None; // scaling matrices
            }
        }
        let log2_max_frame_num = r.ue()? + 4;
        if r.ue()? != 0 {
            return None; // only picture order count type 0 lets non-reference pictures repeat
        }
        let log2_max_poc_lsb = r.ue()? + 4;
        r.ue()?; // max_num_ref_frames
        r.u(1)?; // gaps_in_frame_num_value_allowed
        let width = r.ue()? + 1;
        let height = r.ue()? + 1;
        if r.u(1)? != 1 || chroma_format != 1 {
            return None; // fields, or not 4:2:0
        }
        let pps = unescape(pps.get(1..)?);
        let mut r = BitReader::new(&pps);
        r.ue()?; // pic_parameter_set_id
        r.ue()?; // seq_parameter_set_id
        let cabac = r.u(1)? == 1;
        let bottom_field_pic_order = r.u(1)? == 1;
        if r.ue()? != 0 {
            return None; // slice groups
        }
        let num_ref_idx_l0_default = r.ue()? + 1;
        r.ue()?;
        let weighted_pred = r.u(1)? == 1;
        r.u(2)?;
        let pic_init_qp = 26 + r.se()?;
        r.se()?; // pic_init_qs
        r.se()?; // chroma_qp_index_offset
        let deblocking_control = r.u(1)? == 1;
        r.u(1)?; // constrained_intra_pred
        let redundant_pic_cnt = r.u(1)? == 1;
        let macroblocks = width.checked_mul(height)?;
        Some(Self {
            log2_max_frame_num,
            log2_max_poc_lsb,
            bottom_field_pic_order,
            cabac,
            num_ref_idx_l0_default,
            weighted_pred,
            chroma: chroma_format != 0,
            deblocking_control,
            redundant_pic_cnt,
            macroblocks,
            skipped_slice_data: if cabac { cabac_all_skipped(macroblocks, pic_init_qp) } else { vec![] },
        })
    }

    /// Most repeats in a row after a reference picture. A decoder infers the high bits of a
    /// picture order count from the last reference picture's, so no picture may be more than
    /// half the count's range past it: the repeats and the reference picture after them
    /// (counts step by two a frame).
    pub fn max_repeats(&self) -> u32 {
        (1u32 << self.log2_max_poc_lsb) / 4 - 1
    }

    /// Sets the picture order count of an encoder's slice NAL unit (frame or IDR) to `poc` and
    /// returns the NAL unit with the slice's `frame_num`.
    pub fn with_poc(&self, nal: &[u8], poc: u32) -> Result<(Vec<u8>, u32), SyntaxError> {
        let (&head, body) = nal.split_first().ok_or(SyntaxError("an empty NAL unit"))?;
        let kind = head & 0x1f;
        if kind != 1 && kind != 5 {
            return Err(SyntaxError("not a slice"));
        }
        let mut rbsp = unescape(body);
        let mut r = BitReader::new(&rbsp);
        let short = || SyntaxError("a slice header cut short");
        r.ue().ok_or_else(short)?; // first_mb_in_slice
        r.ue().ok_or_else(short)?; // slice_type
        r.ue().ok_or_else(short)?; // pic_parameter_set_id
        let frame_num = r.u(self.log2_max_frame_num).ok_or_else(short)?;
        if kind == 5 {
            r.ue().ok_or_else(short)?; // idr_pic_id
        }
        let at = r.pos;
        if at + self.log2_max_poc_lsb as usize > rbsp.len() * 8 {
            return Err(short());
        }
        let lsb = poc & ((1 << self.log2_max_poc_lsb) - 1);
        for i in 0..self.log2_max_poc_lsb as usize {
            let bit = (lsb >> (self.log2_max_poc_lsb as usize - 1 - i)) & 1;
            let (byte, shift) = ((at + i) / 8, 7 - (at + i) % 8);
            rbsp[byte] = (rbsp[byte] & !(1 << shift)) | ((bit as u8) << shift);
        }
        let mut out = Vec::with_capacity(nal.len() + 4);
        out.push(head);
        escape_into(&rbsp, &mut out);
        Ok((out, frame_num))
    }

    /// A picture that repeats its reference exactly: one non-reference P slice, every
    /// macroblock skipped, following a reference picture whose `frame_num` was `ref_frame_num`.
    /// The NAL unit comes without length or start code.
    pub fn repeat(&self, ref_frame_num: u32, poc: u32) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.ue(0); // first_mb_in_slice
        w.ue(5); // slice_type: P, as every slice of the picture
        w.ue(0); // pic_parameter_set_id
        w.u(self.log2_max_frame_num, (ref_frame_num + 1) & ((1 << self.log2_max_frame_num) - 1));
        w.u(self.log2_max_poc_lsb, poc & ((1 << self.log2_max_poc_lsb) - 1));
        if self.bottom_field_pic_order {
            w.se(0);
        }
        if self.redundant_pic_cnt {
            w.ue(0);
        }
        w.u(1, 0); // num_ref_idx_active_override_flag
        w.u(1, 0); // ref_pic_list_modification_flag_l0
        if self.weighted_pred {
            w.ue(0); // luma_log2_weight_denom
            if self.chroma {
                w.ue(0);
            }
            for _ in 0..self.num_ref_idx_l0_default {
                w.u(1, 0);
                if self.chroma {
                    w.u(1, 0);
                }
            }
        }
        // nal_ref_idc 0: no dec_ref_pic_marking.
        if self.cabac {
            w.ue(0); // cabac_init_idc
        }
        w.se(0); // slice_qp_delta: the PPS's initial QP
        if self.deblocking_control {
            w.ue(1); // no deblocking: nothing in a copied picture has an edge to filter
        }
        if self.cabac {
            while !w.aligned() {
                w.u(1, 1); // cabac_alignment_one_bit
            }
            w.bytes.extend_from_slice(&self.skipped_slice_data);
        } else {
            w.ue(self.macroblocks); // mb_skip_run
            w.u(1, 1); // rbsp_stop_one_bit
        }
        while !w.aligned() {
            w.u(1, 0);
        }
        let mut out = vec![0x01]; // nal_ref_idc 0, a non-IDR slice
        escape_into(&w.bytes, &mut out);
        out
    }
}

/// CABAC slice data in which all `macroblocks` are skipped, at slice QP `qp`, ending with the
/// RBSP stop bit and byte-aligned.
fn cabac_all_skipped(macroblocks: u32, qp: i32) -> Vec<u8> {
    let mut c = Cabac::new(BitWriter::default());
    let mut skip = Context::new(23, 33, qp);
    for mb in 0..macroblocks {
        // No neighbour is coded (all skipped): the skip flag's first context.
        c.decision(&mut skip, 1);
        c.terminate(mb + 1 == macroblocks);
    }
    let mut w = c.finish();
    while !w.aligned() {
        w.u(1, 0);
    }
    w.bytes
}

/// The RBSP of a NAL unit's payload: emulation prevention bytes removed.
fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut zeros = 0;
    for &x in b {
        if zeros >= 2 && x == 3 {
            zeros = 0;
            continue;
        }
        zeros = if x == 0 { zeros + 1 } else { 0 };
        out.push(x);
    }
    out
}

/// Appends `rbsp` with emulation prevention bytes, so no start code appears inside.
fn escape_into(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &x in rbsp {
        if zeros >= 2 && x <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if x == 0 { zeros + 1 } else { 0 };
        out.push(x);
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let b = *self.data.get(self.pos / 8)?;
        let v = (b >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(v as u32)
    }

    fn u(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some((v << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + self.u(zeros)? as u64) as u32)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()? as i64;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits of the last byte in use (0 when aligned).
    used: u32,
}

impl BitWriter {
    fn bit(&mut self, b: u32) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        let last = self.bytes.last_mut().expect("pushed");
        *last |= ((b & 1) as u8) << (7 - self.used);
        self.used = (self.used + 1) % 8;
    }

    fn u(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            self.bit(v >> i);
        }
    }

    fn ue(&mut self, v: u32) {
        let x = v as u64 + 1;
        let len = 64 - x.leading_zeros();
        self.u(len - 1, 0);
        for i in (0..len).rev() {
            self.bit((x >> i) as u32);
        }
    }

    fn se(&mut self, v: i32) {
        self.ue(if v > 0 { (2 * v - 1) as u32 } else { (-2 * v) as u32 });
    }

    fn aligned(&self) -> bool {
        self.used == 0
    }
}

/// One CABAC context: probability state and most probable symbol.
struct Context {
    state: u8,
    mps: u8,
}

impl Context {
    /// The initial state of a context with model `(m, n)` at slice QP `qp` (H.264 9.3.1.1).
    fn new(m: i32, n: i32, qp: i32) -> Self {
        let pre = (((m * qp.clamp(0, 51)) >> 4) + n).clamp(1, 126);
        if pre <= 63 { Self { state: (63 - pre) as u8, mps: 0 } } else { Self { state: (pre - 64) as u8, mps: 1 } }
    }
}

/// The CABAC arithmetic coder (H.264 9.3.4).
struct Cabac {
    w: BitWriter,
    low: u32,
    range: u32,
    outstanding: u32,
    first: bool,
}

impl Cabac {
    fn new(w: BitWriter) -> Self {
        Self { w, low: 0, range: 510, outstanding: 0, first: true }
    }

    fn put(&mut self, b: u32) {
        if self.first {
            self.first = false;
        } else {
            self.w.bit(b);
        }
        while self.outstanding > 0 {
            self.w.bit(1 - b);
            self.outstanding -= 1;
        }
    }

    fn renormalise(&mut self) {
        while self.range < 256 {
            if self.low < 256 {
                self.put(0);
            } else if self.low >= 512 {
                self.low -= 512;
                self.put(1);
            } else {
                self.low -= 256;
                self.outstanding += 1;
            }
            self.range <<= 1;
            self.low <<= 1;
        }
    }

    fn decision(&mut self, ctx: &mut Context, bin: u8) {
        let lps = RANGE_TAB_LPS[ctx.state as usize][((self.range >> 6) & 3) as usize] as u32;
        self.range -= lps;
        if bin != ctx.mps {
            self.low += self.range;
            self.range = lps;
            if ctx.state == 0 {
                ctx.mps = 1 - ctx.mps;
            }
            ctx.state = TRANS_IDX_LPS[ctx.state as usize];
        } else {
            ctx.state = (ctx.state + 1).min(62);
        }
        self.renormalise();
    }

    fn terminate(&mut self, last: bool) {
        self.range -= 2;
        if last {
            self.low += self.range;
            // Flush: the final bit written is the RBSP stop bit.
            self.range = 2;
            self.renormalise();
            self.put((self.low >> 9) & 1);
            self.w.u(2, ((self.low >> 7) & 3) | 1);
        } else {
            self.renormalise();
        }
    }

    fn finish(self) -> BitWriter {
        self.w
    }
}

/// H.264 Table 9-44: the LPS sub-range by probability state and quarter of the range.
const RANGE_TAB_LPS: [[u8; 4]; 64] = [
    [128, 176, 208, 240],
    [128, 167, 197, 227],
    [128, 158, 187, 216],
    [123, 150, 178, 205],
    [116, 142, 169, 195],
    [111, 135, 160, 185],
    [105, 128, 152, 175],
    [100, 122, 144, 166],
    [95, 116, 137, 158],
    [90, 110, 130, 150],
    [85, 104, 123, 142],
    [81, 99, 117, 135],
    [77, 94, 111, 128],
    [73, 89, 105, 122],
    [69, 85, 100, 116],
    [66, 80, 95, 110],
    [62, 76, 90, 104],
    [59, 72, 86, 99],
    [56, 69, 81, 94],
    [53, 65, 77, 89],
    [51, 62, 73, 85],
    [48, 59, 69, 80],
    [46, 56, 66, 76],
    [43, 53, 63, 72],
    [41, 50, 59, 69],
    [39, 48, 56, 65],
    [37, 45, 54, 62],
    [35, 43, 51, 59],
    [33, 41, 48, 56],
    [32, 39, 46, 53],
    [30, 37, 43, 50],
    [29, 35, 41, 48],
    [27, 33, 39, 45],
    [26, 31, 37, 43],
    [24, 30, 35, 41],
    [23, 28, 33, 39],
    [22, 27, 32, 37],
    [21, 26, 30, 35],
    [20, 24, 29, 33],
    [19, 23, 27, 31],
    [18, 22, 26, 30],
    [17, 21, 25, 28],
    [16, 20, 23, 27],
    [15, 19, 22, 25],
    [14, 18, 21, 24],
    [14, 17, 20, 23],
    [13, 16, 19, 22],
    [12, 15, 18, 21],
    [12, 14, 17, 20],
    [11, 14, 16, 19],
    [11, 13, 15, 18],
    [10, 12, 15, 17],
    [10, 12, 14, 16],
    [9, 11, 13, 15],
    [9, 11, 12, 14],
    [8, 10, 12, 14],
    [8, 9, 11, 13],
    [7, 9, 11, 12],
    [7, 9, 10, 12],
    [7, 8, 10, 11],
    [6, 8, 9, 11],
    [6, 7, 9, 10],
    [6, 7, 8, 9],
    [2, 2, 2, 2],
];

/// H.264 Table 9-45: the next state after a least probable symbol.
const TRANS_IDX_LPS: [u8; 64] = [
    0, 0, 1, 2, 2, 4, 4, 5, 6, 7, 8, 9, 9, 11, 11, 12, 13, 13, 15, 15, 16, 16, 18, 18, 19, 19, 21, 21, 22, 22, 23, 24,
    24, 25, 26, 26, 27, 27, 28, 29, 29, 30, 30, 30, 31, 32, 32, 33, 33, 33, 34, 34, 35, 35, 35, 36, 36, 36, 37, 37, 37,
    38, 38, 63,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_escapes_round_trip() {
        let mut w = BitWriter::default();
        for v in [0, 1, 2, 5, 255, 70_000] {
            w.ue(v);
        }
        for v in [0, 1, -1, 7, -300] {
            w.se(v);
        }
        w.u(5, 0b10110);
        let mut r = BitReader::new(&w.bytes);
        for v in [0, 1, 2, 5, 255, 70_000] {
            assert_eq!(r.ue(), Some(v));
        }
        for v in [0, 1, -1, 7, -300] {
            assert_eq!(r.se(), Some(v));
        }
        assert_eq!(r.u(5), Some(0b10110));
        let rbsp = [0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 7, 0, 0];
        let mut escaped = vec![];
        escape_into(&rbsp, &mut escaped);
        assert!(!escaped.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2), "{escaped:?}");
        assert_eq!(unescape(&escaped), rbsp);
    }

    #[test]
    fn contexts_start_where_the_standard_says() {
        // ctxIdx 11 (P mb_skip_flag, cabac_init_idc 0) at QP 26: (23*26 >> 4) + 33 = 70.
        let c = Context::new(23, 33, 26);
        assert_eq!((c.state, c.mps), (6, 1));
        let low = Context::new(-28, 127, 51);
        assert_eq!((low.state, low.mps), (26, 0), "(-28*51 >> 4) + 127 = 37");
    }

    #[test]
    fn odd_layouts_are_refused() {
        assert_eq!(StreamParams::parse(&[], &[]), None);
        assert_eq!(StreamParams::parse(&[0x67, 0x42], &[0x68]), None, "cut short");
    }
}
