"""Explicit Arrow schemas of every table the simulator writes (telemetry and truth).

Column names carry their unit or scale (``obmt_ns``, ``flux_e``, ``al_residual_uas``);
each field also carries ``unit`` and ``description`` metadata, and each schema its
``dpct.type`` name and ``dpct.version``. Only plain types and ``list<…>`` of them are used.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

_I8, _I16, _I32, _I64 = pa.int8(), pa.int16(), pa.int32(), pa.int64()
_F32, _F64, _B, _S = pa.float32(), pa.float64(), pa.bool_(), pa.string()


def _f(name: str, type_: pa.DataType, unit: str, description: str) -> pa.Field:
    return pa.field(
        name,
        type_,
        nullable=False,
        metadata={b"unit": unit.encode(), b"description": description.encode()},
    )


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={b"dpct.type": name.encode(), b"dpct.version": str(SCHEMA_VERSION).encode()},
    )


_OBMT = "ns"
SCHEMAS: dict[str, pa.Schema] = {
    # ------------------------------------------------------------------ telemetry -----
    "af_windows": _schema(
        "af_windows",
        [
            _f("window_id", _I64, "", "unique window id: chunk index << 24 | row"),
            _f("obmt_ns", _I64, _OBMT, "OBMT when sample 0 crossed the CCD's fiducial line"),
            _f("source_id", _I64, "", "cross-matched catalogue source"),
            _f("fov", _I8, "", "field of view: 0 preceding, 1 following"),
            _f("ccd_index", _I16, "", "AF CCD 0 … 61 (row-major, row 4 has no AF9)"),
            _f("ccd_row", _I8, "", "CCD row 1 … 7"),
            _f("ccd_strip", _I8, "", "AF strip 1 … 9"),
            _f("g_mag", _F32, "mag", "catalogue G magnitude"),
            _f("bp_rp_mag", _F32, "mag", "catalogue colour G_BP − G_RP"),
            _f("n_samples", _I16, "", "AL samples kept (12 faint, 18 bright, fewer if truncated)"),
            _f("first_sample", _I16, "", "index of sample 0 in the untruncated window"),
            _f("truncated", _B, "", "window truncated (close neighbour)"),
            _f("gate_lines", _I16, "", "integrated TDI lines (4500 = ungated)"),
            _f("ac_px", _F32, "px", "AC pixel coordinate μ of the window centre"),
            _f("ron_e", _F32, "e-", "read-out noise per sample of this CCD"),
            _f("saturated", _B, "", "a sample reached the full well"),
            _f("samples_e", pa.list_(_F32), "e-", "AC-binned AL samples, bias-subtracted"),
        ],
    ),
    "bam_images": _schema(
        "bam_images",
        [
            _f("image_id", _I64, "", "image index on the global cadence grid"),
            _f("obmt_ns", _I64, _OBMT, "OBMT of the image (mid-integration)"),
            _f("fov", _I8, "", "field of view whose fringes these are: 0 preceding, 1 following"),
            _f("al_first_px", _I16, "px", "AL pixel of sample 0 on the BAM CCD"),
            _f("ac_first_px", _I16, "px", "first AC pixel of the binned window"),
            _f("n_ac_binned", _I16, "", "number of AC pixels binned into each sample"),
            _f("ron_e", _F32, "e-", "read-out noise per sample"),
            _f("samples_e", pa.list_(_F32), "e-", "AL fringe profile (≥ 1000 samples)"),
        ],
    ),
    "gsr_observations": _schema(
        "gsr_observations",
        [
            _f("obs_id", _I64, "", "observation id (= the AF window_id)"),
            _f("source_id", _I64, "", "star (primary source)"),
            _f("obmt_ns", _I64, _OBMT, "transit time at the CCD's fiducial line"),
            _f("fov", _I8, "", "field of view: 0 preceding, 1 following"),
            _f("ccd_index", _I16, "", "AF CCD 0 … 61"),
            _f("ccd_row", _I8, "", "CCD row 1 … 7"),
            _f("ccd_strip", _I8, "", "AF strip 1 … 9"),
            _f(
                "scan_angle_rad", _F64, "rad", "ψ: position angle of the scan direction at the star"
            ),
            _f("al_residual_uas", _F64, "uas", "observed − computed AL abscissa (BAV-corrected)"),
            _f("al_error_uas", _F64, "uas", "1σ error of the residual"),
            _f(
                "astro_partials", pa.list_(_F64), "uas/uas; uas/(uas/yr)", "∂η/∂(α*, δ, ϖ, μα*, μδ)"
            ),
            _f(
                "att_first_coeff",
                _I64,
                "",
                "absolute index j of the first attitude B-spline coefficient",
            ),
            _f(
                "att_partials",
                pa.list_(_F64),
                "uas/uas",
                "12 values: axis-major ∂η/∂c(axis, j + k)",
            ),
            _f("instr_cols", pa.list_(_I32), "", "6 instrument unknown indices"),
            _f("instr_partials", pa.list_(_F64), "uas/uas", "6 partials for instr_cols"),
            _f("gamma_partial_uas", _F64, "uas", "∂η/∂γ (PPN γ)"),
        ],
    ),
    "hk": _schema(
        "hk",
        [
            _f("obmt_ns", _I64, _OBMT, "sample time"),
            _f("fpa_temp_k", _F64, "K", "focal-plane assembly temperature"),
            _f("payload_temp_k", _F64, "K", "payload-module (torus) temperature"),
            _f("bam_bench_temp_k", _F64, "K", "BAM optical-bench temperature"),
            _f("bus_voltage_v", _F64, "V", "main power-bus voltage"),
            _f("ccd_clock_voltage_v", _F64, "V", "AF CCD TDI clock high level"),
        ],
    ),
    "data_qualifiers": _schema(
        "data_qualifiers",
        [
            _f("dq_id", _I64, "", "bad-interval id (the same in every chunk it spans)"),
            _f("start_obmt_ns", _I64, _OBMT, "start of the bad interval (clipped to the chunk)"),
            _f("stop_obmt_ns", _I64, _OBMT, "end (exclusive, clipped to the chunk)"),
            _f("instrument", _S, "", "AF or ALL (a telemetry gap)"),
            _f("fov", _I8, "", "0, 1, or −1 for both"),
            _f("ccd_index", _I16, "", "AF CCD 0 … 61, or −1 for all"),
            _f(
                "reason",
                _S,
                "",
                "ccd_anomaly | charge_injection_failure | readout_glitch | telemetry_gap",
            ),
        ],
    ),
    "gsr_reference_catalogue": _schema(
        "gsr_reference_catalogue",
        [
            _f("source_id", _I64, "", "star"),
            _f("ra_deg", _F64, "deg", "reference right ascension (ICRS, at the GSR epoch)"),
            _f("dec_deg", _F64, "deg", "reference declination"),
        ],
    ),
    # ------------------------------------------------------------------ truth ---------
    "af_truth": _schema(
        "af_truth",
        [
            _f("window_id", _I64, "", "the AF window"),
            _f("obmt_ns", _I64, _OBMT, "as in af_windows"),
            _f("source_id", _I64, "", "true source"),
            _f(
                "transit_obmt_ns",
                _I64,
                _OBMT,
                "true time the image centroid crossed the fiducial line",
            ),
            _f(
                "centroid_px", _F64, "px", "true AL centroid in sample units from sample 0's centre"
            ),
            _f("flux_e", _F64, "e-", "star electrons in the window (after gating)"),
            _f("background_e", _F64, "e-", "background per sample"),
            _f("lsf_sigma_core_px", _F64, "px", "true LSF core σ"),
            _f("lsf_sigma_halo_px", _F64, "px", "true LSF halo σ"),
            _f("lsf_halo_weight", _F64, "", "true LSF halo weight"),
            _f("lsf_asym_px", _F64, "px", "true LSF core–halo separation"),
            _f("ac_star_px", _F64, "px", "true AC pixel coordinate μ of the star"),
            _f("cosmic_ray_sample", _I16, "", "sample hit by a cosmic ray, −1 if none"),
            _f("cosmic_ray_e", _F32, "e-", "charge deposited by the cosmic ray"),
            _f("corrupted", _B, "", "inside a data-qualifier bad interval (samples corrupted)"),
        ],
    ),
    "bam_truth": _schema(
        "bam_truth",
        [
            _f("image_id", _I64, "", "the BAM image"),
            _f("obmt_ns", _I64, _OBMT, "as in bam_images"),
            _f("fov", _I8, "", "field of view"),
            _f(
                "phase_rad",
                _F64,
                "rad",
                "fringe phase φ in I = B + A·E(x)[1 + V cos(2π(x − x_c)/P − φ)]",
            ),
            _f("period_px", _F64, "px", "fringe period P"),
            _f("visibility", _F64, "", "fringe visibility V"),
            _f("peak_e", _F64, "e-", "envelope peak A"),
            _f("background_e", _F64, "e-", "background B per sample"),
            _f(
                "envelope_centre_px", _F64, "px", "centre of the Gaussian envelope E (sample units)"
            ),
            _f("envelope_sigma_px", _F64, "px", "σ of the envelope"),
            _f("shift_uas", _F64, "uas", "AL shift of this field's pattern: ±BAV/2 + common mode"),
            _f("bav_uas", _F64, "uas", "true basic-angle variation ΔΓ (total)"),
            _f("bav_harmonic_uas", _F64, "uas", "spin-harmonic part of ΔΓ"),
            _f("bav_slow_uas", _F64, "uas", "slow drift part of ΔΓ"),
            _f("bav_jump_uas", _F64, "uas", "cumulative jumps part of ΔΓ"),
            _f("common_mode_uas", _F64, "uas", "shift common to both fields"),
        ],
    ),
    "catalogue": _schema(
        "catalogue",
        [
            _f("source_id", _I64, "", "pixel << 20 | index"),
            _f("ra_deg", _F64, "deg", "ICRS right ascension at J2016.0 (TCB)"),
            _f("dec_deg", _F64, "deg", "ICRS declination at J2016.0"),
            _f("parallax_mas", _F64, "mas", "parallax"),
            _f("pmra_masyr", _F64, "mas/yr", "proper motion μα* = μα cos δ"),
            _f("pmdec_masyr", _F64, "mas/yr", "proper motion μδ"),
            _f("g_mag", _F32, "mag", "G magnitude"),
            _f("bp_rp_mag", _F32, "mag", "colour G_BP − G_RP"),
            _f("primary", _B, "", "GSR primary star"),
            _f("delta_ra_cosdec_uas", _F64, "uas", "truth − reference, Δα*"),
            _f("delta_dec_uas", _F64, "uas", "truth − reference, Δδ"),
            _f("delta_parallax_uas", _F64, "uas", "truth − reference, Δϖ"),
            _f("delta_pmra_uasyr", _F64, "uas/yr", "truth − reference, Δμα*"),
            _f("delta_pmdec_uasyr", _F64, "uas/yr", "truth − reference, Δμδ"),
        ],
    ),
    "attitude": _schema(
        "attitude",
        [
            _f("obmt_ns", _I64, _OBMT, "sample time (every 10 s)"),
            *[
                _f(f"true_q{c}", _F64, "", f"true attitude quaternion {c} (ICRS → SRS)")
                for c in "xyzw"
            ],
            *[_f(f"ref_q{c}", _F64, "", f"reference attitude quaternion {c}") for c in "xyzw"],
            *[
                _f(f"nominal_q{c}", _F64, "", f"nominal-scanning-law quaternion {c}")
                for c in "xyzw"
            ],
            _f("sun_longitude_rad", _F64, "rad", "λ, ecliptic J2000 (unwrapped)"),
            _f("precession_phase_rad", _F64, "rad", "ν (unwrapped)"),
            _f("spin_phase_rad", _F64, "rad", "heliotropic Ω in [0, 2π)"),
            _f("bav_uas", _F64, "uas", "true basic-angle variation"),
        ],
    ),
    "gsr_attitude": _schema(
        "gsr_attitude",
        [
            _f("coeff_index", _I64, "", "absolute B-spline coefficient index j"),
            _f("theta_x_uas", _F64, "uas", "true − reference, rotation about SRS x"),
            _f("theta_y_uas", _F64, "uas", "true − reference, rotation about SRS y"),
            _f("theta_z_uas", _F64, "uas", "true − reference, rotation about SRS z"),
        ],
    ),
    "bav_jumps": _schema(
        "bav_jumps",
        [
            _f("obmt_ns", _I64, _OBMT, "jump time"),
            _f("amplitude_uas", _F64, "uas", "jump of ΔΓ"),
            _f("source", _S, "", "random | thermal | injected | injected_thermal"),
        ],
    ),
    "thermal_events": _schema(
        "thermal_events",
        [
            _f("obmt_ns", _I64, _OBMT, "event time"),
            _f("amplitude_k", _F64, "K", "payload temperature step (FPA: ×0.1, BAM bench: ×0.5)"),
            _f("tau_s", _F64, "s", "relaxation time"),
            _f("bav_jump_uas", _F64, "uas", "basic-angle jump caused"),
            _f("source", _S, "", "random | injected"),
        ],
    ),
    # ------------------------------------------------------------------ static truth --
    "scanlaw": _schema(
        "scanlaw",
        [
            _f("solar_aspect_deg", _F64, "deg", "ξ"),
            _f("precession_speed", _F64, "", "S = |dz/dt| / (dλ/dt)"),
            _f("spin_rate_arcsec_s", _F64, "arcsec/s", "ω_z"),
            _f("basic_angle_deg", _F64, "deg", "Γ"),
            _f("nsl_start_obmt_ns", _I64, _OBMT, "reference epoch of ν₀, Ω₀"),
            _f("precession_phase_ref_rad", _F64, "rad", "ν₀"),
            _f("spin_phase_ref_rad", _F64, "rad", "Ω₀"),
            _f("tdi_period_ns", _I64, "ns", "TDI line period"),
            _f("pixel_al_mas", _F64, "mas", "AL angle of one TDI line"),
            _f("pixel_ac_mas", _F64, "mas", "AC pixel angle"),
            _f("attitude_knot_ns", _I64, "ns", "GSR attitude B-spline knot interval"),
            _f("strip_pitch_mas", _F64, "mas", "AL angle between AF fiducial lines"),
            _f("row_pitch_mas", _F64, "mas", "AC angle between CCD rows"),
        ],
    ),
    "lsf_ccd": _schema(
        "lsf_ccd",
        [
            _f("ccd_index", _I16, "", "AF CCD"),
            _f("ccd_row", _I8, "", "row"),
            _f("ccd_strip", _I8, "", "strip"),
            _f("sigma_core_px", _F64, "px", "core σ at colour 1.0 and the NSL start"),
            _f("halo_ratio", _F64, "", "halo σ / core σ"),
            _f("halo_weight", _F64, "", "halo weight a"),
            _f("asym_px", _F64, "px", "core–halo separation d at colour 1.0"),
            _f("sigma_colour_per_mag", _F64, "1/mag", "relative σ change per mag of colour"),
            _f("asym_colour_px_per_mag", _F64, "px/mag", "d change per mag of colour"),
            _f("ageing_per_year", _F64, "1/yr", "relative σ growth per year"),
            _f("ron_e", _F64, "e-", "read-out noise per sample"),
        ],
    ),
    "gsr_instrument": _schema(
        "gsr_instrument",
        [
            _f("column", _I32, "", "instrument unknown index (instr_cols)"),
            _f("term", _S, "", "offset | ac1 | ac2 | colour | magnitude | colour_ac"),
            _f("fov", _I8, "", "field of view"),
            _f("ccd_index", _I16, "", "AF CCD"),
            _f("value_uas", _F64, "uas", "true value (the reference is 0)"),
        ],
    ),
    "gsr_global": _schema(
        "gsr_global",
        [_f("name", _S, "", "global parameter"), _f("value", _F64, "", "true − reference")],
    ),
    "bav_model": _schema(
        "bav_model",
        [
            _f("k", _I16, "", "spin harmonic order (0: constant)"),
            _f("cos_uas", _F64, "uas", "C_k in ΔΓ = Σ C_k cos kΩ + S_k sin kΩ"),
            _f("sin_uas", _F64, "uas", "S_k"),
        ],
    ),
    "bav_drift": _schema(
        "bav_drift",
        [
            _f("rate_uas_per_day", _F64, "uas/day", "linear drift since the NSL start"),
            _f("slow_amplitude_uas", _F64, "uas", "30-day sinusoid amplitude"),
            _f("slow_period_days", _F64, "day", "its period"),
            _f("slow_phase_rad", _F64, "rad", "its phase at OBMT 0"),
            _f("common_mode_uas", _F64, "uas", "common-mode sinusoid amplitude (both fields)"),
            _f("common_mode_period_s", _F64, "s", "its period"),
        ],
    ),
    "anomalies": _schema(
        "anomalies",
        [
            _f("kind", _S, "", "background_jump | lsf_broadening | bam_jump | thermal_event | gap"),
            _f("start_obmt_ns", _I64, _OBMT, "start (or time) of the anomaly"),
            _f("stop_obmt_ns", _I64, _OBMT, "end of a gap, −1 otherwise"),
            _f("ccd_index", _I16, "", "CCD, −1 for all or n/a"),
            _f("fov", _I8, "", "FoV, −1 for both or n/a"),
            _f("value", _F64, "", "delta_e, rate_per_day, amplitude_uas or amplitude_k"),
        ],
    ),
}

#: Telemetry tables of a chunk (``SimChunk.products``).
TELEMETRY_TABLES = (
    "af_windows",
    "bam_images",
    "gsr_observations",
    "hk",
    "data_qualifiers",
    "gsr_reference_catalogue",
)
"""Tables a delivery carries: the products, and the reference catalogue that comes with
``gsr_observations`` (the positions the mission knows before the solve)."""
#: Truth tables of a chunk (``SimChunk.truth``).
TRUTH_TABLES = (
    "af_truth",
    "bam_truth",
    "stars",
    "attitude",
    "gsr_attitude",
    "bav_jumps",
    "thermal_events",
)
#: Tables of :meth:`Simulator.static_truth`.
STATIC_TABLES = (
    "scanlaw",
    "lsf_ccd",
    "gsr_instrument",
    "gsr_global",
    "bav_model",
    "bav_drift",
    "anomalies",
)
SCHEMAS["stars"] = SCHEMAS["catalogue"].with_metadata(
    {b"dpct.type": b"stars", b"dpct.version": str(SCHEMA_VERSION).encode()}
)
