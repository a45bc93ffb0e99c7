"""Altair charts in the units people use (TiB/GiB = 2^40/2^30 bytes)."""
from __future__ import annotations

import altair as alt
import pandas as pd

GIB, TIB = 1 << 30, 1 << 40


def stacked_daily(rows: list[dict]) -> alt.Chart:
    """Daily TiB stacked by registry."""
    df = pd.DataFrame(rows)
    df["TiB"] = df["bytes"] / TIB
    df["registry"] = df["registry"].fillna("(none)")
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("day:T", title="day"), y=alt.Y("sum(TiB):Q", title="TiB (2^40 bytes)"),
        color=alt.Color("registry:N"), tooltip=["day:T", "registry:N", alt.Tooltip("TiB:Q", format=".3f")],
    ).properties(height=280)


def lines(rows: list[dict], x: str, fields: dict[str, str], x_title: str = "", height: int = 220) -> alt.Chart:
    """Several measures over time, one line each (fields: column -> label)."""
    df = pd.DataFrame(rows)[[x, *fields]].rename(columns=fields).melt(x, var_name="measure", value_name="value")
    return alt.Chart(df).mark_line(point=len(rows) < 60).encode(
        x=alt.X(f"{x}:T", title=x_title or x), y=alt.Y("value:Q", title=None), color="measure:N",
        tooltip=[f"{x}:T", "measure:N", "value:Q"]).properties(height=height)


def compare(current: list[dict], previous: list[dict], shift, measure: str, title: str, scale: float = 1) -> alt.Chart:
    """This period against the one before, drawn over the same time axis (previous shifted by ``shift``)."""
    cur = pd.DataFrame(current)
    cur["period"] = "this period"
    frames = [cur]
    if previous:
        prev = pd.DataFrame(previous)
        prev["t"] = pd.to_datetime(prev["t"]) + shift
        prev["period"] = "previous period"
        frames.append(prev)
    df = pd.concat(frames, ignore_index=True)
    df["t"] = pd.to_datetime(df["t"])
    df["value"] = df[measure] / scale
    return alt.Chart(df).mark_line().encode(
        x=alt.X("t:T", title=None), y=alt.Y("value:Q", title=title),
        color=alt.Color("period:N", sort=["this period", "previous period"]),
        strokeDash=alt.StrokeDash("period:N", sort=["this period", "previous period"]),
        tooltip=["t:T", "period:N", alt.Tooltip("value:Q", format=",.3f")]).properties(height=260)


def bars(rows: list[dict], label: str, value: str, title: str, scale: float = 1, limit: int = 20) -> alt.Chart:
    """Horizontal bars, biggest first, one labelled row each."""
    df = pd.DataFrame(rows[:limit])
    df["value"] = df[value] / scale
    counts = scale == 1 and pd.api.types.is_integer_dtype(df[value])
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("value:Q", title=title, axis=alt.Axis(tickMinStep=1, format="d") if counts else alt.Axis()),
        y=alt.Y(f"{label}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        tooltip=[f"{label}:N", alt.Tooltip("value:Q", format=",d" if counts else ",.3f")],
    ).properties(height=alt.Step(22))


def hourly(rows: list[dict], start=None, end=None) -> alt.Chart:
    """An entity's hourly profile: GiB per hour, the hours without traffic drawn as zero (the
    API lists only hours with some)."""
    df = pd.DataFrame(rows)
    df["hour"] = pd.to_datetime(df["hour"])
    hours = pd.date_range(pd.Timestamp(start).floor("h") if start else df["hour"].min(),
                          (pd.Timestamp(end) - pd.Timedelta(hours=1)).floor("h") if end else df["hour"].max(), freq="h")
    df = df.set_index("hour").reindex(hours, fill_value=0).rename_axis("hour").reset_index()
    df["GiB"] = df["bytes"] / GIB
    return alt.Chart(df).mark_area(opacity=0.7).encode(
        x=alt.X("hour:T", title=None), y=alt.Y("GiB:Q", title="GiB per hour (2^30 bytes)"),
        tooltip=["hour:T", alt.Tooltip("GiB:Q", format=",.2f"), "requests:Q"]).properties(height=220)


def burn_up(daily: list[dict], budget: int | None, projected: int | None, low: int | None, high: int | None,
            end_day: str) -> alt.LayerChart:
    """The month's TiB so far, day by day, the projection to its end with the band, and the budget."""
    df = pd.DataFrame(daily)
    df["day"] = pd.to_datetime(df["day"])
    df["TiB"] = df["bytes"].cumsum() / TIB
    layers = [alt.Chart(df).mark_area(opacity=0.35, line=True).encode(
        x=alt.X("day:T", title=None), y=alt.Y("TiB:Q", title="TiB used this month (2^40 bytes)"),
        tooltip=["day:T", alt.Tooltip("TiB:Q", format=",.3f")])]
    if projected is not None:
        last = df.iloc[-1]
        end = pd.to_datetime(end_day)
        proj = pd.DataFrame({"day": [last["day"], end], "TiB": [last["TiB"], projected / TIB],
                             "low": [last["TiB"], (low or projected) / TIB], "high": [last["TiB"], (high or projected) / TIB]})
        layers.append(alt.Chart(proj).mark_area(opacity=0.2, color="orange").encode(x="day:T", y="low:Q", y2="high:Q"))
        layers.append(alt.Chart(proj).mark_line(strokeDash=[6, 4], color="orange").encode(
            x="day:T", y="TiB:Q", tooltip=[alt.Tooltip("TiB:Q", format=",.3f", title="projected TiB")]))
    if budget:
        layers.append(alt.Chart(pd.DataFrame({"TiB": [budget / TIB]})).mark_rule(color="red").encode(
            y="TiB:Q", tooltip=[alt.Tooltip("TiB:Q", title="budget TiB")]))
    return alt.layer(*layers).properties(height=300)
