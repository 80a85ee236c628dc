"""Simulator configuration: one frozen, validated pydantic model, grouped by subsystem.

Every number that shapes the simulated data lives here, so a configuration (plus the
code version) fully determines the output; ``SimConfig.model_dump_json()`` is what a
workflow should record and hash.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dpct.mission.constants import DAY_NS, NS_PER_S, NSL_START_OBMT_NS
from dpct.sim._anomalies import Anomaly, EventRates

#: Telemetry product types, in the order chunks list them.
PRODUCTS: tuple[str, ...] = (
    "af_windows",
    "bam_images",
    "gsr_observations",
    "hk",
    "data_qualifiers",
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CatalogueConfig(_Model):
    """Star catalogue model (truth)."""

    n_stars: int = Field(
        default=44_400_000,
        gt=0,
        description="stars on the whole sky at scale 1 (G ≤ g_max): ≈ 1.5·10⁷ AF windows/day",
    )
    g_min_mag: float = 3.0
    g_max_mag: float = 20.7


class ScanLawConfig(_Model):
    """Nominal scanning law and the true attitude's departures from it."""

    precession_phase_rad: float = Field(default=0.0, description="ν at the NSL start")
    spin_phase_rad: float = Field(default=0.0, description="heliotropic Ω at the NSL start")
    wobble_arcsec: float = Field(
        default=1.0, ge=0, description="rms per axis of realised − commanded attitude"
    )
    attitude_error_mas: float = Field(
        default=0.5, ge=0, description="rms of the GSR attitude-correction B-spline coefficients"
    )
    attitude_knot_s: float = Field(default=60.0, gt=0, description="GSR attitude knot interval")

    @model_validator(mode="after")
    def _knot_in_ns(self) -> ScanLawConfig:
        if abs(self.attitude_knot_s * NS_PER_S - round(self.attitude_knot_s * NS_PER_S)) > 0:
            raise ValueError("attitude_knot_s must be a whole number of nanoseconds")
        return self


class AfConfig(_Model):
    """Astrometric-field windows."""

    faint_samples: int = Field(default=12, ge=4, le=64)
    bright_samples: int = Field(default=18, ge=4, le=64)
    bright_g_mag: float = Field(default=16.0, description="G ≤ this gets the bright window")
    ron_e: float = Field(default=4.5, ge=0, description="read-out noise per sample, AF2–AF9")
    ron_af1_e: float = Field(default=6.5, ge=0, description="read-out noise per sample, AF1")
    sky_background_e: float = Field(
        default=20.0, ge=0, description="mean sky per ungated sample at high latitude"
    )
    full_well_e: float = Field(
        default=5.0e5, gt=0, description="saturation level per AC-binned sample"
    )
    gating: bool = True
    saturation: bool = True
    cosmic_ray_probability: float = Field(default=0.01, ge=0, le=1)
    cosmic_ray_mean_e: float = Field(default=3000.0, gt=0)
    truncation_probability: float = Field(default=0.02, ge=0, le=1)
    onboard_al_error_px: float = Field(default=0.25, ge=0)
    onboard_ac_error_px: float = Field(default=0.5, ge=0)
    lsf_ageing_per_year: float = Field(
        default=0.02, description="relative LSF-width growth per year (contamination)"
    )


class BamConfig(_Model):
    """Basic Angle Monitor images and the true basic-angle variation."""

    images_per_day: float = Field(default=80_000.0, gt=0, description="at scale 1")
    samples: int = Field(default=1000, ge=100, le=4500)
    fringe_period_px: tuple[float, float] = (8.7, 8.9)
    visibility: tuple[float, float] = (0.60, 0.55)
    peak_e: float = Field(default=20_000.0, gt=0, description="fringe envelope peak per sample")
    background_e: float = Field(default=100.0, ge=0)
    envelope_sigma_px: float = Field(default=250.0, gt=0)
    ron_e: float = Field(default=8.0, ge=0)
    harmonics: int = Field(default=8, ge=1, le=64, description="true spin harmonics k = 1 … K")
    k1_amplitude_uas: float = Field(default=1000.0, ge=0)
    harmonic_decay: float = Field(default=0.5, gt=0, description="amplitude ratio k+1 : k")
    drift_uas_per_day: float = 0.5
    slow_amplitude_uas: float = Field(default=20.0, description="30-day sinusoidal drift")
    common_mode_uas: float = Field(default=200.0, ge=0)
    jumps_per_day: float = Field(default=0.3, ge=0)
    jump_rms_uas: float = Field(default=20.0, ge=0)


class GsrConfig(_Model):
    """Global-sphere-reconstruction observations."""

    g_max_mag: float = Field(default=17.0, description="primary stars: G ≤ this")
    reference_error_mas: float = Field(
        default=1.0, ge=0, description="rms of truth − reference (mas, mas/yr)"
    )
    gamma_minus_one: float = Field(default=0.0, description="true PPN γ − 1")
    error_floor_uas: float = Field(default=30.0, ge=0)
    noise: bool = Field(default=True, description="False: residuals are noise-free")
    instrument_rms_uas: tuple[float, float, float, float, float, float] = (
        1000.0,
        200.0,
        100.0,
        150.0,
        100.0,
        50.0,
    )


class HkConfig(_Model):
    """Housekeeping samples and thermal events."""

    period_s: float = Field(default=16.0, gt=0)
    thermal_events_per_day: float = Field(default=0.2, ge=0)
    thermal_amplitude_k: float = Field(default=0.5, ge=0)
    thermal_tau_s: float = Field(default=7200.0, gt=0)
    thermal_bav_jump_rms_uas: float = Field(default=30.0, ge=0)


class QualityConfig(_Model):
    """Random bad intervals (data qualifiers) and telemetry gaps."""

    bad_intervals_per_day: float = Field(default=2.0, ge=0)
    gaps_per_day: float = Field(default=0.0, ge=0)


class SimConfig(_Model):
    """Everything that determines a simulation.

    Attributes
    ----------
    seed
        Root of every random stream.
    scale
        Volume scale: multiplies the star density (hence AF windows and GSR rows) and the
        BAM image rate. 1.0 is the full day (≈ 1.5·10⁷ windows, 8·10⁴ BAM images).
    chunk_s
        Chunk length; chunks sit on a fixed OBMT grid so that each is reproducible alone.
    products
        Telemetry products to generate (others are skipped, with their truth).
    anomalies
        Injected anomalies (background jumps, LSF broadening, BAM jumps, thermal events,
        gaps).
    """

    seed: int = Field(default=0, ge=0)
    scale: float = Field(default=1.0, gt=0, le=10)
    chunk_s: int = Field(default=900, gt=0)
    products: tuple[str, ...] = PRODUCTS
    catalogue: CatalogueConfig = CatalogueConfig()
    scanlaw: ScanLawConfig = ScanLawConfig()
    af: AfConfig = AfConfig()
    bam: BamConfig = BamConfig()
    gsr: GsrConfig = GsrConfig()
    hk: HkConfig = HkConfig()
    quality: QualityConfig = QualityConfig()
    anomalies: tuple[Anomaly, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if DAY_NS % (self.chunk_s * NS_PER_S) != 0:
            raise ValueError(f"chunk_s={self.chunk_s} must divide one day (86400 s)")
        unknown = set(self.products) - set(PRODUCTS)
        if unknown:
            raise ValueError(f"unknown products {sorted(unknown)}; known: {list(PRODUCTS)}")
        if "gsr_observations" in self.products and "af_windows" not in self.products:
            raise ValueError("gsr_observations are made from AF transits: add af_windows")
        return self

    @property
    def chunk_ns(self) -> int:
        """Chunk length, ns."""
        return self.chunk_s * NS_PER_S

    @property
    def event_rates(self) -> EventRates:
        """Rates and seed of the random per-day events."""
        return EventRates(
            seed=self.seed,
            start_day=NSL_START_OBMT_NS // DAY_NS,
            bav_jumps_per_day=self.bam.jumps_per_day,
            bav_jump_rms_uas=self.bam.jump_rms_uas,
            thermal_events_per_day=self.hk.thermal_events_per_day,
            thermal_amplitude_k=self.hk.thermal_amplitude_k,
            thermal_tau_s=self.hk.thermal_tau_s,
            thermal_bav_jump_rms_uas=self.hk.thermal_bav_jump_rms_uas,
            dq_intervals_per_day=self.quality.bad_intervals_per_day,
            gaps_per_day=self.quality.gaps_per_day,
        )
