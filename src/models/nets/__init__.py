"""The networks, each with its input contract (`input_contract`), its pretrained weights (`load_pretrained`)
and its class-activation layer (`cam_target_layer`): MesoNet, ResNet50+LSTM, timm backbones."""
