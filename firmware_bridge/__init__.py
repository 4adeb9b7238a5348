"""The village alarm board and alarm panels: serial link to the board's microcontroller
(sans-I/O framing and link state machine, asyncio transport over pyserial), the board
simulator, Ademco Contact ID and SIA DC-09 panels, and the typed alarms they all become."""
