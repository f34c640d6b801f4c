"""The voice gateway: phone calls (Twilio Media Streams) into cluster sessions."""
