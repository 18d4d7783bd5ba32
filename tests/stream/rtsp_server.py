"""A real RTSP server for the reconnect test: GStreamer's gst-rtsp-server serving a moving test pattern.

Runs under the system Python, which has the GObject bindings (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base/-good); the test starts and kills it.

    /usr/bin/python3 tests/stream/rtsp_server.py PORT    # rtsp://127.0.0.1:PORT/belt
"""

import sys


def main(port: str) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # RTP/JPEG (RFC 2435) carries 4:2:0 JPEG only, hence the I420 caps
    factory.set_launch("( videotestsrc pattern=ball is-live=true ! video/x-raw,width=64,height=64,framerate=25/1 "
                       "! videoconvert ! video/x-raw,format=I420 ! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/belt", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1])
