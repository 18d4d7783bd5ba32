"""``edgeopt devices``: the hardware matrix — what each profile has and where the figures come from."""

from __future__ import annotations

import typer

from edgeopt.cli.app import app
from edgeopt.report.console import make_console


@app.command("devices")
def devices_command(
    sources: bool = typer.Option(False, "--sources", help="Also print where each figure comes from."),
) -> None:
    """List the device profiles `edgeopt optimize --device` accepts (host: this machine, measured)."""
    from rich.table import Table

    from edgeopt.devices import all_devices

    console = make_console()
    table = Table(title="device profiles (peaks are theoretical; host: this machine, emulated and measured)")
    for header in ("id", "device", "CPU", "cores", "memory", "FP32 GFLOPS", "INT8 GOPS", "GB/s", "GPU", "runtimes", "latency"):
        table.add_column(header, justify="right" if header in ("cores", "memory", "FP32 GFLOPS", "INT8 GOPS", "GB/s") else "left")
    for device in all_devices():
        cpu = device.cpu
        memory = (f"{device.mcu.sram_kb:g} KB SRAM, {device.mcu.flash_kb:g} KB flash" if device.mcu
                  else f"{device.memory_mb:.0f} MB")
        peak = "{:.3g}" if device.mcu else "{:.0f}"  # a microcontroller's peaks are fractions of a GOPS
        table.add_row(device.id, device.name, cpu.description, str(cpu.cores), memory,
                      peak.format(cpu.fp32_gflops), peak.format(cpu.int8_gops) if cpu.int8_gops else "–",
                      f"{cpu.memory_gbps:.1f}" if cpu.memory_gbps else "–",
                      device.gpu.description if device.gpu else "–", ", ".join(device.backends),
                      "measured" if device.is_host else "estimated")
    console.print(table)
    if sources:
        for device in all_devices():
            console.print(f"[bold]{device.id}[/]")
            for line in device.sources:
                console.print(f"  - {line}", soft_wrap=True, markup=False)
